package exitcode

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestCodes(t *testing.T) {
	t.Parallel()
	base := fs.ErrNotExist
	if Of(nil, 9) != OK || Of(base, 9) != 9 {
		t.Error("Of without a code")
	}
	e := New(NoInput, "data directory /d holds no store", base)
	if e.Error() != "data directory /d holds no store" || !errors.Is(e, fs.ErrNotExist) || Of(e, 1) != NoInput {
		t.Errorf("New: %q %d", e, Of(e, 1))
	}
	// Wrapping keeps the innermost code; With does not override it.
	wrapped := fmt.Errorf("context: %w", e)
	if Of(wrapped, 1) != NoInput || Of(With(Software, wrapped), 1) != NoInput {
		t.Error("a code is lost or overridden by wrapping")
	}
	w := With(Config, base)
	if w.Error() != base.Error() || Of(w, 1) != Config || !errors.Is(w, fs.ErrNotExist) {
		t.Errorf("With: %q %d", w, Of(w, 1))
	}
	if With(Config, nil) != nil {
		t.Error("With(nil) is not nil")
	}
}
