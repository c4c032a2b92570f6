package httpapi

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/unsubscribe"
)

var unsubKey = []byte("0123456789abcdef0123456789abcdef")

func newUnsubEnv(t *testing.T) *env {
	return newEnvDeps(t, Config{}, func(d *Deps) {
		d.Unsubscribe = &unsubscribe.Links{Key: unsubKey, BaseURL: "https://links.example.net"}
	})
}

func TestUnsubscribeGroupsScopedByAccount(t *testing.T) {
	t.Parallel()
	e := newUnsubEnv(t)
	acme, other := e.key("acme", "admin", "read"), e.key("other", "admin", "read")
	r := e.post("/v1/unsubscribe-groups", acme, map[string]string{"name": "Product <news>"})
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var g groupView
	r.json(t, &g)
	if !validGroupID(g.ID) || g.Name != "Product <news>" {
		t.Errorf("created %+v", g)
	}
	for _, bad := range []map[string]string{
		{"id": "Bad ID", "name": "x"}, {"id": strings.Repeat("a", 65), "name": "x"}, {"name": ""}, {"name": "a\r\nb"},
		{"name": strings.Repeat("n", 201)},
	} {
		if r := e.post("/v1/unsubscribe-groups", acme, bad); r.status != 400 {
			t.Errorf("create %v: %d, want 400", bad, r.status)
		}
	}
	// Another account sees, changes and deletes none of it; it may use
	// the same ID.
	if r := e.get("/v1/unsubscribe-groups/"+g.ID, other); r.status != 404 {
		t.Errorf("other account GET: %d", r.status)
	}
	if r := e.do("PATCH", "/v1/unsubscribe-groups/"+g.ID, other, "application/json", strings.NewReader(`{"name":"mine"}`)); r.status != 404 {
		t.Errorf("other account PATCH: %d", r.status)
	}
	if r := e.del("/v1/unsubscribe-groups/"+g.ID, other); r.status != 404 {
		t.Errorf("other account DELETE: %d", r.status)
	}
	if r := e.post("/v1/unsubscribe-groups", other, map[string]string{"id": g.ID, "name": "Theirs"}); r.status != 201 {
		t.Errorf("same ID in another account: %d", r.status)
	}
	var list groupList
	e.get("/v1/unsubscribe-groups", acme).json(t, &list)
	if len(list.Groups) != 1 || list.Groups[0].Name != "Product <news>" {
		t.Errorf("acme's groups %+v", list)
	}
	// A suppression in another account's group is refused.
	if r := e.post("/v1/suppressions", acme, map[string]string{"address": "x@example.org", "group": "nope"}); r.status != 400 {
		t.Errorf("suppression in an unknown group: %d", r.status)
	}
}

func TestSuppressionsByKindAndGroup(t *testing.T) {
	t.Parallel()
	e := newUnsubEnv(t)
	adm := e.key("acme", "admin", "read")
	e.post("/v1/unsubscribe-groups", adm, map[string]string{"id": "news", "name": "News"})
	for _, s := range []map[string]string{
		{"address": "a@example.org"},
		{"address": "b@example.org", "reason": "hard_bounce"},
		{"address": "b@example.org", "group": "news", "reason": "unsubscribe"},
		{"address": "c@example.org", "group": "news", "reason": "manual", "kind": "unsubscribe"},
	} {
		if r := e.post("/v1/suppressions", adm, s); r.status != 201 {
			t.Fatalf("add %v: %d %s", s, r.status, r.body)
		}
	}
	list := func(q string) []string {
		var out []string
		cursor := ""
		for i := 0; i < 10; i++ {
			var p suppressionPage
			r := e.get("/v1/suppressions?limit=1"+q+"&cursor="+url.QueryEscape(cursor), adm)
			if r.status != 200 {
				t.Fatalf("%s: %d %s", q, r.status, r.body)
			}
			r.json(t, &p)
			for _, s := range p.Suppressions {
				out = append(out, s.Address+"/"+s.Group+"/"+s.Kind)
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		return strings.Split(strings.Join(out, " "), " ")
	}
	for q, want := range map[string]string{
		"":                  "a@example.org//manual b@example.org//bounce b@example.org/news/unsubscribe c@example.org/news/unsubscribe",
		"&group=news":       "b@example.org/news/unsubscribe c@example.org/news/unsubscribe",
		"&group=":           "a@example.org//manual b@example.org//bounce",
		"&kind=unsubscribe": "b@example.org/news/unsubscribe c@example.org/news/unsubscribe",
		"&kind=bounce":      "b@example.org//bounce",
	} {
		if got := strings.Join(list(q), " "); got != want {
			t.Errorf("list%s = %s, want %s", q, got, want)
		}
	}
	if r := e.del("/v1/suppressions/c@example.org", adm); r.status != 404 {
		t.Errorf("DELETE without group of a group-only address: %d", r.status)
	}
	if r := e.del("/v1/suppressions/b@example.org?group=news", adm); r.status != 204 {
		t.Errorf("DELETE in group: %d", r.status)
	}
	if got := strings.Join(list(""), " "); got != "a@example.org//manual b@example.org//bounce c@example.org/news/unsubscribe" {
		t.Errorf("after delete: %s", got)
	}
}

func TestSendWithUnsubscribeLink(t *testing.T) {
	t.Parallel()
	e := newUnsubEnv(t)
	snd := e.key("acme", "send", "admin")
	e.post("/v1/unsubscribe-groups", snd, map[string]string{"id": "news", "name": "News"})
	msg := map[string]any{"from": "app@acme.example", "to": []string{"Bob <Bob@Example.org>"}, "subject": "hi", "text": "hello",
		"unsubscribe_group": "news"}
	r := e.post("/v1/messages", snd, msg)
	if r.status != 202 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	sub := e.sub.last()
	if sub.ID == "" || sub.UnsubscribeGroup != "news" {
		t.Fatalf("submission ID %q group %q", sub.ID, sub.UnsubscribeGroup)
	}
	hdr, _, _ := bytes.Cut(sub.Raw, []byte("\r\n\r\n"))
	fields := message.Fields(append(hdr, "\r\n"...))
	lu := message.FieldValues(fields, "List-Unsubscribe")
	post := message.FieldValues(fields, "List-Unsubscribe-Post")
	if len(lu) != 1 || len(post) != 1 || strings.TrimSpace(post[0]) != "List-Unsubscribe=One-Click" {
		t.Fatalf("header fields %q %q in\n%s", lu, post, hdr)
	}
	link := strings.TrimSpace(lu[0])
	tok, ok := strings.CutPrefix(link, "<https://links.example.net/unsubscribe/")
	if !ok || !strings.HasSuffix(tok, ">") {
		t.Fatalf("link %q", link)
	}
	got, err := unsubscribe.Verify(unsubKey, strings.TrimSuffix(tok, ">"))
	if err != nil || got.Account != "acme" || got.Recipient != "bob@example.org" || got.Group != "news" || got.MessageID != sub.ID {
		t.Errorf("token %+v %v (message %s)", got, err, sub.ID)
	}

	// Without a group: the global link.
	msg2 := map[string]any{"from": "app@acme.example", "to": []string{"bob@example.org"}, "text": "x", "list_unsubscribe": true}
	if r := e.post("/v1/messages", snd, msg2); r.status != 202 {
		t.Fatalf("list_unsubscribe: %d %s", r.status, r.body)
	}
	if sub := e.sub.last(); sub.UnsubscribeGroup != "" || !bytes.HasPrefix(sub.Raw, []byte("List-Unsubscribe: <https://links.example.net/unsubscribe/")) {
		t.Errorf("global link: %.200s", sub.Raw)
	}
	// Without either: nothing added.
	if r := e.post("/v1/messages", snd, map[string]any{"from": "app@acme.example", "to": []string{"bob@example.org"}, "text": "x"}); r.status != 202 {
		t.Fatal(r.status)
	}
	if sub := e.sub.last(); bytes.Contains(sub.Raw, []byte("List-Unsubscribe")) {
		t.Errorf("plain message got a link")
	}

	n := e.sub.count()
	for name, c := range map[string]struct {
		msg   map[string]any
		field string
	}{
		"two recipients": {map[string]any{"from": "app@acme.example", "to": []string{"a@example.org"}, "cc": []string{"b@example.org"}, "text": "x", "unsubscribe_group": "news"}, "unsubscribe_group"},
		"unknown group":  {map[string]any{"from": "app@acme.example", "to": []string{"a@example.org"}, "text": "x", "unsubscribe_group": "ghost"}, "unsubscribe_group"},
		"own header":     {map[string]any{"from": "app@acme.example", "to": []string{"a@example.org"}, "text": "x", "list_unsubscribe": true, "headers": map[string]string{"List-Unsubscribe": "<mailto:x@y>"}}, "headers.List-Unsubscribe"},
	} {
		r := e.post("/v1/messages", snd, c.msg)
		var eb struct{ Error Error }
		r.json(t, &eb)
		if r.status != 400 || eb.Error.Field != c.field {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if strings.Contains(string(e.post("/v1/messages", snd, map[string]any{"from": "app@acme.example", "to": []string{"a@example.org", "b@example.org"}, "text": "x", "list_unsubscribe": true}).body), "personalizations") == false {
		t.Error("the refusal of several recipients does not point to personalizations")
	}
	if e.sub.count() != n {
		t.Error("a refused message was submitted")
	}
}

func TestSendWithoutUnsubscribeLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	snd := e.key("acme", "send")
	r := e.post("/v1/messages", snd, map[string]any{"from": "app@acme.example", "to": []string{"a@example.org"}, "text": "x", "list_unsubscribe": true})
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "not available") {
		t.Errorf("without links: %d %s", r.status, r.body)
	}
}
