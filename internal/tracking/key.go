package tracking

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/heraldmail/herald/internal/store"
)

// KeySecret is the name of the store secret holding the key that signs
// tracking tokens. Every node reads the same secret, so a link made by
// one node is accepted by all.
const KeySecret = "tracking"

// keyLen is the length of a new key.
const keyLen = 32

// LoadKey returns the cluster's tracking key from the store's secrets,
// making it on first use (when several nodes race, the first stored wins).
func LoadKey(ctx context.Context, st store.Secrets) ([]byte, error) {
	initial := make([]byte, keyLen)
	if _, err := rand.Read(initial); err != nil {
		return nil, fmt.Errorf("tracking key: %w", err)
	}
	key, err := st.Secret(ctx, KeySecret, initial)
	if err != nil {
		return nil, fmt.Errorf("tracking key: %w", err)
	}
	if len(key) < keyLen {
		return nil, fmt.Errorf("tracking key in the store: %d bytes, want at least %d", len(key), keyLen)
	}
	return key, nil
}
