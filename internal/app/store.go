package app

import "github.com/heraldmail/herald/internal/store"

// Store returns the node's store (for the CLI-equivalent setup in tests).
func (a *App) Store() store.Store { return a.store }
