package simulator

import "testing"

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		addr string
		want Outcome
		ok   bool
	}{
		{"delivered@simulator.herald.invalid", Delivered, true},
		{"bounce@simulator.herald.invalid", Bounce, true},
		{"softbounce@simulator.herald.invalid", SoftBounce, true},
		{"complaint@simulator.herald.invalid", Complaint, true},
		{"suppressed@simulator.herald.invalid", Suppressed, true},
		{"Bounce+order-42@Simulator.Herald.Invalid", Bounce, true},
		{"bounce+@simulator.herald.invalid.", Bounce, true},
		{"complaint+a+b@simulator.herald.invalid", Complaint, true},
		{"nobody@simulator.herald.invalid", Unknown, true},
		{"@simulator.herald.invalid", Unknown, true},
		{"bouncer@simulator.herald.invalid", Unknown, true},
		{"bounce@simulator.herald.invalid.example", Unknown, false},
		{"bounce@other.simulator.herald.invalid", Unknown, false},
		{"bounce@example.com", Unknown, false},
		{"simulator.herald.invalid", Unknown, false},
	} {
		got, ok := Lookup(c.addr)
		if got != c.want || ok != c.ok {
			t.Errorf("Lookup(%q) = %v, %v; want %v, %v", c.addr, got, ok, c.want, c.ok)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Delivered: "delivered", Bounce: "bounce", SoftBounce: "softbounce",
		Complaint: "complaint", Suppressed: "suppressed", Unknown: ""} {
		if got := o.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", o, got, want)
		}
		if o != Unknown {
			if got, _ := Lookup(want + "@" + Domain); got != o {
				t.Errorf("Lookup of %q = %v, want %v", want, got, o)
			}
		}
	}
}
