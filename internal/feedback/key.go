package feedback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/verp"
)

// KeySecret is the name of the store secret holding the VERP key.
const KeySecret = "verp"

// KeyFileError is LoadKey's error about the key file of an earlier Herald
// (damaged, unreadable); the store was not changed.
type KeyFileError struct {
	Path string
	Err  error
}

// Error describes the file's problem.
func (e *KeyFileError) Error() string { return e.Err.Error() }

// Unwrap returns the file error.
func (e *KeyFileError) Unwrap() error { return e.Err }

// LoadKey returns the VERP key every node shares: the store's secret
// KeySecret, made on first use. Before the store held it, each node kept it
// in its data directory (legacyFile, DATA_DIR/verp.key): a node that still
// has that file and finds no key in the store imports the file's key, so
// that the VERP addresses of mail it already sent stay valid. When another
// node's key is in the store already (another node was migrated or
// started first), the file is ignored and the mismatch logged: bounces to
// addresses made with it are then no longer recognised. Errors about the
// file are *KeyFileError; others are the store's.
func LoadKey(ctx context.Context, st store.Secrets, legacyFile string, log *slog.Logger) ([]byte, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := st.Secret(ctx, KeySecret, nil)
	switch {
	case err == nil:
		if err := verp.CheckKey(key); err != nil {
			return nil, fmt.Errorf("VERP key in the store: %w", err)
		}
		if legacyFile != "" {
			if file, ferr := verp.ReadKey(legacyFile); ferr == nil && !bytes.Equal(file, key) {
				log.Warn("the VERP key file differs from the cluster's key in the store and is ignored: bounces to VERP addresses made with it are not recognised; remove it",
					"file", legacyFile)
			}
		}
		return key, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	initial, fromFile := []byte(nil), false
	if legacyFile != "" {
		initial, err = verp.ReadKey(legacyFile)
		switch {
		case err == nil:
			fromFile = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, &KeyFileError{Path: legacyFile, Err: err}
		}
	}
	if !fromFile {
		if initial, err = verp.NewKey(); err != nil {
			return nil, err
		}
	}
	key, err = st.Secret(ctx, KeySecret, initial)
	if err != nil {
		return nil, err
	}
	if err := verp.CheckKey(key); err != nil {
		return nil, fmt.Errorf("VERP key in the store: %w", err)
	}
	switch {
	case fromFile && bytes.Equal(key, initial):
		log.Info("imported the VERP key file into the store; every node now uses it (the file is no longer read)", "file", legacyFile)
	case fromFile:
		log.Warn("another node stored its VERP key first; this node's key file is ignored: bounces to VERP addresses made with it are not recognised",
			"file", legacyFile)
	}
	return key, nil
}
