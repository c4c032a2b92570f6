package webhook

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestSignTestVector(t *testing.T) {
	t.Parallel()
	got := Sign("whsec_test", time.Unix(1735689600, 0), []byte(`{"id":1}`))
	want := "t=1735689600,v1=8f1a3fef95ed7ec5882c49a5fe0c74a2b97c46d13fde2e873ded26a7699530e8"
	if got != want {
		t.Fatalf("Sign = %q, want %q (the vector documented in doc.go)", got, want)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1735689600, 0)
	body := []byte(`{"id":1,"type":"delivered"}`)
	good := Sign("secret", now, body)
	ts := strconv.FormatInt(now.Unix(), 10)
	other := Sign("rotated-out", now, body)
	for _, tc := range []struct {
		name   string
		secret string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", "secret", good, body, now, nil},
		{"valid at window edge", "secret", good, body, now.Add(5 * time.Minute), nil},
		{"clock skew ahead", "secret", good, body, now.Add(-4 * time.Minute), nil},
		{"spaces and unknown keys", "secret", " v2=zz , " + good + " ", body, now, nil},
		{"secret rotation", "secret", other + ",v1=" + good[len("t="+ts+",v1="):], body, now, nil},
		{"replayed later", "secret", good, body, now.Add(5*time.Minute + time.Second), ErrSignatureExpired},
		{"from the future", "secret", good, body, now.Add(-6 * time.Minute), ErrSignatureExpired},
		{"tampered body", "secret", good, []byte(`{"id":2,"type":"delivered"}`), now, ErrSignatureMismatch},
		{"wrong secret", "other", good, body, now, ErrSignatureMismatch},
		{"timestamp changed", "secret", "t=" + strconv.FormatInt(now.Unix()+1, 10) + good[len("t="+ts):], body, now, ErrSignatureMismatch},
		{"empty", "secret", "", body, now, ErrSignatureFormat},
		{"no t", "secret", good[len("t="+ts+","):], body, now, ErrSignatureFormat},
		{"no v1", "secret", "t=" + ts, body, now, ErrSignatureFormat},
		{"bad hex", "secret", "t=" + ts + ",v1=xyz", body, now, ErrSignatureFormat},
		{"short mac", "secret", "t=" + ts + ",v1=abcd", body, now, ErrSignatureFormat},
		{"bad t", "secret", "t=abc" + good[len("t="+ts):], body, now, ErrSignatureFormat},
		{"two t", "secret", "t=1," + good, body, now, ErrSignatureFormat},
	} {
		err := Verify(tc.secret, tc.header, tc.body, tc.now, 5*time.Minute)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestVerifyDefaultTolerance(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	h := Sign("k", now, nil)
	if err := Verify("k", h, nil, now.Add(DefaultTolerance), 0); err != nil {
		t.Fatalf("at the default window: %v", err)
	}
	if err := Verify("k", h, nil, now.Add(DefaultTolerance+time.Second), 0); !errors.Is(err, ErrSignatureExpired) {
		t.Fatalf("past the default window: %v", err)
	}
}

func TestNewPayloadEmptyCollections(t *testing.T) {
	t.Parallel()
	p := NewPayload(storeEvent())
	if p.Tags == nil || p.Metadata == nil {
		t.Fatalf("nil collections in %+v", p)
	}
	if !p.Time.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || p.Time.Location() != time.UTC {
		t.Fatalf("time = %v, want UTC", p.Time)
	}
}

func TestPublicOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": false, "[::1]:443": false, "10.1.2.3:80": false, "192.168.0.1:80": false,
		"172.16.5.4:80": false, "169.254.169.254:80": false, "[fd00::1]:80": false, "0.0.0.0:80": false,
		"[::ffff:127.0.0.1]:80": false, "93.184.216.34:443": true, "[2001:4860:4860::8888]:443": true,
	} {
		err := PublicOnly("tcp", addr, nil)
		if (err == nil) != ok {
			t.Errorf("PublicOnly(%s) = %v, want allowed=%v", addr, err, ok)
		}
	}
}

// TestSignAllRotation: during a rotation the header carries one v1 per
// secret over the same timestamp and body, the current secret first; a
// receiver holding either secret verifies it, a third secret does not.
func TestSignAllRotation(t *testing.T) {
	t.Parallel()
	now := time.Unix(1735689600, 0)
	body := []byte(`{"id":1}`)
	got := SignAll([]string{"whsec_test", "whsec_old"}, now, body)
	one := Sign("whsec_test", now, body)
	if want := one + ",v1=" + Sign("whsec_old", now, body)[len("t=1735689600,v1="):]; got != want {
		t.Fatalf("SignAll = %q, want %q", got, want)
	}
	if one != "t=1735689600,v1=8f1a3fef95ed7ec5882c49a5fe0c74a2b97c46d13fde2e873ded26a7699530e8" {
		t.Fatalf("the documented vector changed: %q", one)
	}
	for _, s := range []string{"whsec_test", "whsec_old"} {
		if err := Verify(s, got, body, now, 0); err != nil {
			t.Errorf("Verify with %s: %v", s, err)
		}
	}
	if err := Verify("whsec_other", got, body, now, 0); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Verify with a third secret: %v, want mismatch", err)
	}
	if err := Verify("whsec_old", got, []byte(`{"id":2}`), now, 0); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Verify of another body: %v, want mismatch", err)
	}
}
