package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// TestScheduledSendThroughRestarts sends through the real HTTP API a
// message scheduled two hours ahead, to a local mailbox, and restarts the
// server twice on the same data directory with a fake clock: the message
// is not delivered before its send_at (each run delivers an ordinary
// message meanwhile, so its scheduler is seen working), explain says it is
// scheduled, and it is delivered once the clock reaches send_at.
func TestScheduledSendThroughRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(dir, sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := st.AddUser(ctx, store.User{Address: "bob@example.test", PasswordHash: "x", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	token, id, hash := httpapi.NewToken()
	if err := st.AddAPIKey(ctx, store.APIKey{ID: id, Account: store.DefaultAccount, Scopes: []string{store.ScopeSend, store.ScopeRead},
		SecretHash: hash, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	clk := clock.NewFake(t0)
	sendAt := t0.Add(2 * time.Hour)
	mailbox := filepath.Join(dir, "mail", "example.test", "bob", "new")

	// run starts the server and returns its API's URL and a stop function
	// that waits for it to shut down.
	run := func() (string, func()) {
		t.Helper()
		cfg := goodConfig(dir)
		cfg.Queue.PollInterval = 10 * time.Millisecond
		a, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(rctx) }()
		return "http://" + a.Addrs()["http"][0], func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	send := func(url string, body map[string]any) string {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", url+"/v1/messages", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("send: %d %s", res.StatusCode, data)
		}
		var r struct{ ID string }
		json.Unmarshal(data, &r)
		return r.ID
	}
	msg := func(subject string) map[string]any {
		return map[string]any{"from": "app@example.test", "to": []string{"bob@example.test"}, "subject": subject, "text": "hi"}
	}
	// delivered waits until the mailbox holds n messages and returns their
	// contents.
	delivered := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ents, _ := os.ReadDir(mailbox)
			if len(ents) >= n {
				var out []string
				for _, e := range ents {
					b, err := os.ReadFile(filepath.Join(mailbox, e.Name()))
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, string(b))
				}
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("the mailbox holds %d messages, want %d", len(ents), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	count := func(msgs []string, subject string) int {
		n := 0
		for _, m := range msgs {
			if strings.Contains(m, "Subject: "+subject+"\r\n") {
				n++
			}
		}
		return n
	}

	url, stop := run()
	m := msg("scheduled")
	m["send_at"] = sendAt.Format(time.RFC3339)
	schedID := send(url, m)
	req, _ := http.NewRequest("GET", url+"/v1/messages/"+schedID+"/explain", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expl, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(expl, []byte(`"state":"scheduled"`)) || !bytes.Contains(expl, []byte("scheduled to be sent at "+sendAt.Format("2006-01-02 15:04:05 UTC"))) {
		t.Errorf("explain of the scheduled message: %s", expl)
	}
	send(url, msg("first"))
	if got := delivered(1); count(got, "first") != 1 || count(got, "scheduled") != 0 {
		t.Fatalf("first run delivered %d messages: %q", len(got), got)
	}
	stop()

	clk.Advance(time.Hour)
	url, stop = run()
	send(url, msg("second"))
	if got := delivered(2); count(got, "second") != 1 || count(got, "scheduled") != 0 || len(got) != 2 {
		t.Fatalf("second run, an hour before send_at, delivered %q", got)
	}
	stop()

	_, stop = run()
	defer stop()
	clk.Advance(time.Hour)
	if got := delivered(3); count(got, "scheduled") != 1 || len(got) != 3 {
		t.Fatalf("at send_at the mailbox holds %q", got)
	}
}
