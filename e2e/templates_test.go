package e2e

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"

	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// A stored template sent through the HTTP API arrives at a remote MX with
// its values escaped in the HTML part, as they are in the text part, and
// its subject rendered; a send missing variables is refused naming them
// all and nothing leaves.
func TestTemplateSendEscapedAtTheSink(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})

	var tpl struct {
		ID string `json:"id"`
	}
	if code := h.api(tok, "POST", "/v1/templates", map[string]string{
		"name":    "welcome",
		"subject": "Welcome, {{user.first}}",
		"text":    "Hello {{user.first}}, your note: {{note}}",
		"html":    `<p title="{{note}}">Hello {{user.first}}</p><p>{{note}}</p>`,
	}, &tpl); code != 201 {
		t.Fatalf("POST /v1/templates: %d", code)
	}

	var refused struct {
		Error struct {
			Errors []struct{ Field string } `json:"errors"`
		} `json:"error"`
	}
	if code := h.api(tok, "POST", "/v1/messages", map[string]any{"from": "app@acme.test", "to": []string{"bob@remote.test"},
		"template_id": tpl.ID, "data": map[string]any{}}, &refused); code != 400 || len(refused.Error.Errors) != 2 ||
		refused.Error.Errors[0].Field != "data.user.first" || refused.Error.Errors[1].Field != "data.note" {
		t.Fatalf("a send without data: %d %+v", code, refused)
	}

	note := `<script>alert("x")</script> & 'quotes'`
	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", map[string]any{"from": "App <app@acme.test>", "to": []string{"bob@remote.test"},
		"template_id": tpl.ID, "data": map[string]any{"user": map[string]any{"first": "Bob"}, "note": note}}, &sent); code != 202 {
		t.Fatalf("POST /v1/messages: %d", code)
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d messages at the MX; the refused send left too", len(got))
	}
	mr, err := gomail.CreateReader(bytes.NewReader(got[0].Body))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := mr.Header.Subject(); s != "Welcome, Bob" {
		t.Errorf("subject %q", s)
	}
	parts := map[string]string{}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := p.Header.(*gomail.InlineHeader).ContentType()
		b, _ := io.ReadAll(p.Body)
		parts[ct] = string(b)
	}
	esc := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quotes&#39;`
	if html := parts["text/html"]; html != `<p title="`+esc+`">Hello Bob</p><p>`+esc+`</p>` {
		t.Errorf("HTML part at the MX: %q", html)
	}
	if text := parts["text/plain"]; text != "Hello Bob, your note: "+note {
		t.Errorf("text part at the MX: %q", text)
	}
	h.waitEvent(tok, "delivered", "bob@remote.test")
}
