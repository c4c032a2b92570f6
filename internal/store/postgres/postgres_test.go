package postgres

import (
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, newSchema(t), Options{})
	})
}

// Every body in chunks of a few KiB, so that chunking (several chunks,
// written before and at the enqueue) is covered by the whole suite.
func TestConformanceAllChunked(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, newSchema(t), Options{InlineMax: -1, ChunkSize: 4 << 10})
	})
}

func TestConformanceDKIM(t *testing.T) {
	t.Parallel()
	storetest.RunDKIM(t, func(t *testing.T) store.Store {
		return openTest(t, newSchema(t), Options{})
	})
}

func TestConformancePlatform(t *testing.T) {
	t.Parallel()
	storetest.RunPlatform(t, func(t *testing.T) storetest.PlatformStore {
		return openTest(t, newSchema(t), Options{})
	})
}
