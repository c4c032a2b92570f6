package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// herald template list, show and render read the templates the API
// stored; render escapes like a send and names every missing variable.
func TestTemplateCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "account", "add", "shop")
	st := c.store()
	err := st.AddTemplate(context.Background(), store.Template{ID: "tpl_1", Account: "shop", Name: "welcome"},
		store.TemplateVersion{Subject: "Hi {{name}}", Text: "Hello {{name}}", HTML: "<p>{{name}} {{note}}</p>"}, 0)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out := c.ok("", "template", "list", "--account", "shop"); !strings.Contains(out, `tpl_1  "welcome"  active version 1 of 1`) {
		t.Errorf("list: %q", out)
	}
	if out := c.ok("", "template", "list"); out != "" {
		t.Errorf("the default account lists %q", out)
	}
	if out := c.ok("", "template", "show", "tpl_1", "--account", "shop"); !strings.Contains(out, "subject: Hi {{name}}") {
		t.Errorf("show: %q", out)
	}
	out := c.ok(`{"name":"<Ann>","note":"&"}`, "template", "render", "tpl_1", "--account", "shop")
	if !strings.Contains(out, "subject: Hi <Ann>\n") || !strings.Contains(out, "<p>&lt;Ann&gt; &amp;</p>") {
		t.Errorf("render: %q", out)
	}
	data := filepath.Join(t.TempDir(), "data.json")
	os.WriteFile(data, []byte(`{}`), 0o644)
	c.fails(1, "data.name: missing", "template", "render", "tpl_1", "--account", "shop", "--data", data)
	c.fails(1, "data.note: missing", "template", "render", "tpl_1", "--account", "shop", "--data", data)
	c.fails(1, "not found", "template", "show", "tpl_1")
	c.fails(2, "usage", "template", "frob")
}
