package sqlite

import (
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

func TestConformanceDKIM(t *testing.T) {
	t.Parallel()
	storetest.RunDKIM(t, func(t *testing.T) store.Store {
		return openTest(t, t.TempDir(), Options{})
	})
}
