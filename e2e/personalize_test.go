package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// A batch of 1,000 personalizations through the real HTTP listener, the
// acceptance path and delivery to an SMTP sink: 1,000 messages, each with
// its own queue ID, its own recipient and subject, its personalization's
// metadata on its accepted and delivered events; the personalization
// whose recipient is suppressed is queued with a suppressed event and
// never sent. The inline image and the two Reply-To addresses arrive as
// sent.
func TestPlatformBatchPersonalizations(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})
	must(t, h.app.Store().AddSuppression(context.Background(), store.Suppression{Account: "acme", Address: "gone@remote.test", Reason: "manual", Created: time.Now()}))

	const n = 1000
	suppressed := 500 // the personalization sent to the suppressed address
	png := []byte("\x89PNG\r\n\x1a\nnot really an image")
	ps := make([]map[string]any, n)
	for i := range ps {
		to := fmt.Sprintf("user%d@remote.test", i)
		if i == suppressed {
			to = "gone@remote.test"
		}
		ps[i] = map[string]any{"to": []string{to}, "subject": fmt.Sprintf("Order %d", i), "metadata": map[string]string{"n": strconv.Itoa(i)}}
	}
	req := map[string]any{
		"from":             "Shop <app@acme.test>",
		"reply_to_list":    []string{"Support <support@acme.test>", "sales@acme.test"},
		"text":             "Your order",
		"html":             `<p>Your order <img src="cid:logo"></p>`,
		"attachments":      []map[string]string{{"filename": "logo.png", "content": base64.StdEncoding.EncodeToString(png), "disposition": "inline", "content_id": "logo"}},
		"tags":             []string{"batch"},
		"metadata":         map[string]string{"campaign": "e2e"},
		"personalizations": ps,
	}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest("POST", "http://"+h.addr("http")+"/v1/messages", bytes.NewReader(body))
	hreq.Header.Set("Authorization", "Bearer "+tok)
	hreq.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 202 {
		t.Fatalf("batch: %d %s", resp.StatusCode, rb)
	}
	t.Logf("%d personalizations (%d KiB request) accepted in %v: %.0f messages/s", n, len(body)>>10, took.Round(time.Millisecond), float64(n)/took.Seconds())
	var br struct {
		BatchID  string `json:"batch_id"`
		Messages []struct {
			ID        string   `json:"id"`
			MessageID string   `json:"message_id"`
			To        []string `json:"to"`
			Status    string   `json:"status"`
			Error     *struct {
				Status int    `json:"status"`
				Code   string `json:"code"`
			} `json:"error"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(rb, &br); err != nil {
		t.Fatal(err)
	}
	if br.BatchID == "" || len(br.Messages) != n {
		t.Fatalf("batch %q with %d messages", br.BatchID, len(br.Messages))
	}
	byID := make(map[string]int) // queue ID -> personalization
	for i, m := range br.Messages {
		wantTo := fmt.Sprintf("user%d@remote.test", i)
		if i == suppressed {
			wantTo = "gone@remote.test"
		}
		if m.Status != "queued" || m.ID == "" || m.MessageID == "" || m.Error != nil || len(m.To) != 1 || m.To[0] != wantTo {
			t.Fatalf("message %d: %+v", i, m)
		}
		if _, dup := byID[m.ID]; dup {
			t.Fatalf("queue ID %s given twice", m.ID)
		}
		byID[m.ID] = i
	}

	// Every queued message reaches the sink, to its own recipient, with
	// its own subject and Message-ID.
	got := mx.WaitMessages(t, n-1, 60*time.Second)
	seen := make(map[string]bool)
	for _, m := range got {
		if len(m.Rcpts) != 1 {
			t.Fatalf("a message for %v", m.Rcpts)
		}
		var i int
		if _, err := fmt.Sscanf(m.Rcpts[0], "user%d@remote.test", &i); err != nil || seen[m.Rcpts[0]] {
			t.Fatalf("recipient %q (twice: %v)", m.Rcpts[0], seen[m.Rcpts[0]])
		}
		seen[m.Rcpts[0]] = true
		mr, err := gomail.CreateReader(bytes.NewReader(m.Body))
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := mr.Header.Subject(); s != fmt.Sprintf("Order %d", i) {
			t.Fatalf("%s got subject %q", m.Rcpts[0], s)
		}
		if id := mr.Header.Get("Message-Id"); id != br.Messages[i].MessageID {
			t.Fatalf("%s: Message-ID %q, response %q", m.Rcpts[0], id, br.Messages[i].MessageID)
		}
	}
	checkInlineAndReplyTo(t, got[0].Body, png)

	// Each message has its accepted and delivered events with its own
	// personalization's metadata (merged over the top level's); the
	// suppressed one its suppressed event instead.
	for _, typ := range []string{"accepted", "delivered", "suppressed"} {
		want := n - 1
		if typ == "suppressed" {
			want = 1
		}
		evs := h.allEvents(tok, typ, want)
		perMsg := make(map[string]bool)
		for _, e := range evs {
			i, ok := byID[e.MessageID]
			if !ok {
				t.Fatalf("%s event for unknown message %s", typ, e.MessageID)
			}
			if e.Metadata["n"] != strconv.Itoa(i) || e.Metadata["campaign"] != "e2e" || len(e.Tags) != 1 || e.Tags[0] != "batch" {
				t.Fatalf("%s event of personalization %d: metadata %v tags %v", typ, i, e.Metadata, e.Tags)
			}
			perMsg[e.MessageID] = true
		}
		if len(perMsg) != want {
			t.Fatalf("%d messages with %s events, want %d", len(perMsg), typ, want)
		}
	}
	if evs := h.allEvents(tok, "suppressed", 1); evs[0].MessageID != br.Messages[suppressed].ID {
		t.Errorf("suppressed event of message %s, want %s", evs[0].MessageID, br.Messages[suppressed].ID)
	}
	if len(mx.Messages()) != n-1 {
		t.Errorf("%d messages at the sink, want %d (the suppressed address was sent to?)", len(mx.Messages()), n-1)
	}
}

// batchEvent is an event as the test reads it.
type batchEvent struct {
	Type      string            `json:"type"`
	MessageID string            `json:"message_id"`
	Recipient string            `json:"recipient"`
	Tags      []string          `json:"tags"`
	Metadata  map[string]string `json:"metadata"`
}

// allEvents pages through the events of a type until there are want of
// them (the queue works while the test reads).
func (h *herald) allEvents(token, typ string, want int) []batchEvent {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var all []batchEvent
		cursor := ""
		for {
			var page struct {
				Events     []batchEvent `json:"events"`
				NextCursor string       `json:"next_cursor"`
			}
			if code := h.api(token, "GET", "/v1/events?type="+typ+"&limit=500&cursor="+cursor, nil, &page); code != 200 {
				h.t.Fatalf("events: %d", code)
			}
			all = append(all, page.Events...)
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if len(all) >= want {
			return all
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d %s events, want %d", len(all), typ, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkInlineAndReplyTo checks a delivered batch message: two Reply-To
// addresses, and the HTML with its inline image (Content-ID <logo>) in a
// multipart/related.
func checkInlineAndReplyTo(t *testing.T, raw, png []byte) {
	t.Helper()
	mr, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := mr.Header.AddressList("Reply-To")
	if err != nil || len(rt) != 2 || rt[0].Address != "support@acme.test" || rt[1].Address != "sales@acme.test" {
		t.Errorf("Reply-To %v %v", rt, err)
	}
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if mt, params, _ := ent.Header.ContentType(); mt != "multipart/related" || params["type"] != "multipart/alternative" {
		t.Fatalf("top-level %s %v, want multipart/related", mt, params)
	}
	parts := ent.MultipartReader()
	var types []string
	for {
		p, err := parts.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		mt, _, _ := p.Header.ContentType()
		types = append(types, mt)
		if mt == "image/png" {
			b, _ := io.ReadAll(p.Body)
			if p.Header.Get("Content-Id") != "<logo>" || !bytes.Equal(b, png) {
				t.Errorf("inline image Content-ID %q, %d bytes", p.Header.Get("Content-Id"), len(b))
			}
		}
	}
	if strings.Join(types, ",") != "multipart/alternative,image/png" {
		t.Errorf("related parts %v", types)
	}
}
