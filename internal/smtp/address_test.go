package smtp

import "testing"

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"user@example.com":          "user@example.com",
		"User.Name+tag@EXAMPLE.com": "User.Name+tag@example.com",
		"用户@例子.广告":                  "用户@xn--fsqu00a.xn--4rr70v",
		`"quoted local"@x.test`:     `"quoted local"@x.test`,
		"a@[192.0.2.1]":             "a@[192.0.2.1]",
		"a@sub-domain.test.":        "a@sub-domain.test",
	}
	for in, want := range good {
		a, err := ParseAddress(in)
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", in, err)
			continue
		}
		if a.String() != want {
			t.Errorf("ParseAddress(%q) = %q, want %q", in, a.String(), want)
		}
	}
	for _, in := range []string{"", "nodomain", "@x.test", "a@", "a..b@x.test", ".a@x.test", "a@bad..domain",
		"a@-x.test", "a\x00b@x.test", "a b@x.test", "a@x.test\r\n", "\xff@x.test", "a@" + string(make([]byte, 300))} {
		if _, err := ParseAddress(in); err == nil {
			t.Errorf("ParseAddress(%q) accepted", in)
		} else if e, ok := AsError(err); !ok || e.Code != 501 || e.Enhanced != (EnhancedCode{5, 1, 3}) {
			t.Errorf("ParseAddress(%q) error %v, want 501 5.1.3", in, err)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", "用户@例子.广告", `"x y"@z.test`, "a@[1.2.3.4]", "a..b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		// A parsed address parses again to itself.
		b, err := ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("%q -> %q -> %q, %v", s, a, b, err)
		}
	})
}
