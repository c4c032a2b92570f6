package readcache

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// The hand-off cache is bounded: past HandoffMaxBytes a body is not kept
// (its worker reads the database), and bodies whose leases ended make room.
func TestHandoffBounded(t *testing.T) {
	t.Parallel()
	var c Handoff
	big := make([]byte, HandoffMaxBytes/2+1)
	now := time.Now()
	c.Put("a", big, now.Add(time.Hour))
	c.Put("b", big, now.Add(time.Hour))
	if _, ok := c.Get("b"); ok {
		t.Error("cache went over its bound")
	}
	c.Put("c", big, now.Add(-time.Second)) // does not fit either
	c.Drop("a")
	c.Put("c", big, now.Add(-time.Second))
	if _, ok := c.Get("c"); ok {
		t.Error("a body whose lease ended was served")
	}
	c.Put("d", big, now.Add(time.Hour)) // c's lease is over: swept
	if _, ok := c.Get("d"); !ok || c.Bytes() != len(big) {
		t.Errorf("d not kept after sweeping c: %d bytes held", c.Bytes())
	}
	c.Clear()
	if _, ok := c.Get("d"); ok || c.Bytes() != 0 {
		t.Errorf("Clear kept d: %d bytes held", c.Bytes())
	}
}

// A value is read once and reused; errors are not kept; Forget makes the
// next call read again, and a read racing a Forget is not kept.
func TestTTLRead(t *testing.T) {
	t.Parallel()
	var c TTL[int]
	reads := 0
	read := func(v int, err error) func() (int, error) {
		return func() (int, error) { reads++; return v, err }
	}
	if _, err := Read(&c, "k", read(0, errors.New("down"))); err == nil {
		t.Fatal("error not returned")
	}
	if v, _ := Read(&c, "k", read(1, nil)); v != 1 {
		t.Fatalf("got %d after an error, want 1", v)
	}
	if v, _ := Read(&c, "k", read(2, nil)); v != 1 || reads != 2 {
		t.Fatalf("got %d after %d reads, want the kept 1 after 2", v, reads)
	}
	c.Forget()
	if v, _ := Read(&c, "k", read(3, nil)); v != 3 {
		t.Fatalf("got %d after Forget, want 3", v)
	}
	// A change during the read: the old value read is not kept.
	c.Forget()
	v, _ := Read(&c, "k", func() (int, error) { c.Forget(); return 4, nil })
	if v != 4 {
		t.Fatalf("got %d, want 4", v)
	}
	if v, _ := Read(&c, "k", read(5, nil)); v != 5 {
		t.Errorf("got %d: a value read across a change was kept", v)
	}
}

// CloneKeys copies the private keys too: a caller changing its copy leaves
// the cached keys alone.
func TestCloneKeys(t *testing.T) {
	t.Parallel()
	keys := []store.DKIMKey{{Domain: "example.com", Selector: "s", PrivateKey: []byte("secret")}}
	out := CloneKeys(keys)
	out[0].PrivateKey[0] = 'X'
	out[0].Selector = "t"
	if string(keys[0].PrivateKey) != "secret" || keys[0].Selector != "s" {
		t.Errorf("cached keys changed through a clone: %+v", keys[0])
	}
}
