package postgres

import (
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// backend opens each store on a schema of its own; OpenNode opens another
// handle on the same schema as another node.
func backend(opts Options) storetest.Backend {
	return storetest.Backend{
		Open: func(t *testing.T) store.Store {
			return openTest(t, newSchema(t), opts)
		},
		OpenNode: func(t *testing.T, first store.Store, node string) store.Store {
			o := opts
			o.Node = node
			return openTest(t, first.(*Store).dsn, o)
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, backend(Options{}))
}

// Every body in chunks of a few KiB, so that chunking (several chunks,
// written before and at the enqueue) is covered by the whole suite.
func TestConformanceAllChunked(t *testing.T) {
	t.Parallel()
	storetest.Run(t, backend(Options{InlineMax: -1, ChunkSize: 4 << 10}))
}
