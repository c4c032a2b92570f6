package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/tmpl"
)

// maxTemplateData bounds the data file of herald template render.
const maxTemplateData = 8 << 20

// templateCmd lists, shows and renders an account's stored templates
// (issue 12); they are created through the HTTP API.
func (e *cmdEnv) templateCmd(args []string) error {
	verb, rest := sub(args)
	var account, dataFile string
	var version int
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&account, "account", store.DefaultAccount, "owning account")
		if verb == "show" || verb == "render" {
			fs.IntVar(&version, "version", 0, "version (default: the active one)")
		}
		if verb == "render" {
			fs.StringVar(&dataFile, "data", "-", "JSON object of the template's variables: a file, or - for stdin")
		}
	}
	return e.withStore("template", existingStore, rest, extra, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			ts, err := st.ListTemplates(ctx, account)
			for _, t := range ts {
				fmt.Fprintf(e.stdout, "%s  %q  active version %d of %d\n", t.ID, t.Name, t.ActiveVersion(), t.Latest)
			}
			return err
		case verb == "show" && len(pos) == 1:
			v, err := st.GetTemplateVersion(ctx, account, pos[0], version)
			if err != nil {
				return fmt.Errorf("template %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "version: %d\nsubject: %s\n--- text\n%s\n--- html\n%s\n", v.Version, v.Subject, v.Text, v.HTML)
			return nil
		case verb == "render" && len(pos) == 1:
			data, err := e.templateData(dataFile)
			if err != nil {
				return err
			}
			v, err := st.GetTemplateVersion(ctx, account, pos[0], version)
			if err != nil {
				return fmt.Errorf("template %s: %w", pos[0], err)
			}
			out, err := renderVersion(v, data)
			if err != nil {
				return fmt.Errorf("template %s version %d: %w", pos[0], v.Version, err)
			}
			fmt.Fprintf(e.stdout, "subject: %s\n--- text\n%s\n--- html\n%s\n", out.Subject, out.Text, out.HTML)
			return nil
		}
		return fmt.Errorf("%w: herald template list [--account A], template show ID [--version N] [--account A], template render ID [--data FILE] [--version N] [--account A]", errUsage)
	})
}

// templateData reads the JSON object of a rendering from a file or stdin.
func (e *cmdEnv) templateData(name string) (map[string]any, error) {
	var r io.Reader = e.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(io.LimitReader(r, maxTemplateData))
	dec.UseNumber()
	var data map[string]any
	if err := dec.Decode(&data); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("template data: not a JSON object: %w", err)
	}
	return data, nil
}

// renderVersion parses a stored version's parts and renders them; every
// problem is one line of the error.
func renderVersion(v store.TemplateVersion, data map[string]any) (tmpl.Output, error) {
	var set tmpl.Set
	for _, p := range []struct {
		kind tmpl.Kind
		src  string
		dst  **tmpl.Template
	}{{tmpl.Subject, v.Subject, &set.Subject}, {tmpl.Text, v.Text, &set.Text}, {tmpl.HTML, v.HTML, &set.HTML}} {
		if p.src == "" {
			continue
		}
		t, err := tmpl.Parse(p.kind, p.src)
		if err != nil {
			return tmpl.Output{}, fmt.Errorf("%s: %w", p.kind, err)
		}
		*p.dst = t
	}
	out, err := set.Render(data)
	var re *tmpl.RenderError
	if errors.As(err, &re) {
		lines := make([]string, len(re.Problems))
		for i, p := range re.Problems {
			lines[i] = p.Field + ": " + p.Message
		}
		return out, errors.New(strings.Join(lines, "\n"))
	}
	return out, err
}
