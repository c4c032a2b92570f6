package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// templateTests is the part of the suite for store.Templates.
var templateTests = []test{
	{"Versions", testTemplateVersions},
	{"Scoping", testTemplateScoping},
	{"Limits", testTemplateLimits},
	{"ConcurrentVersions", testTemplateConcurrentVersions},
	{"DeleteAccount", testTemplateDeleteAccount},
}

func addTemplate(t *testing.T, s store.Store, account, id string, max int) {
	t.Helper()
	err := s.AddTemplate(context.Background(), store.Template{ID: id, Account: account, Name: "welcome " + id, Created: base},
		store.TemplateVersion{Subject: "Hi {{name}}", Text: "text 1", HTML: "<p>html 1</p>", Created: base}, max)
	if err != nil {
		t.Fatalf("AddTemplate %s/%s: %v", account, id, err)
	}
}

// Versions are numbered from 1; the newest is active until one is
// activated; later versions do not change an activated one unless asked.
func testTemplateVersions(t *testing.T, s store.Store) {
	ctx := context.Background()
	addTemplate(t, s, "acme", "tpl_a", 0)
	tp, err := s.GetTemplate(ctx, "acme", "tpl_a")
	if err != nil || tp.Name != "welcome tpl_a" || tp.Latest != 1 || tp.Activated != 0 || tp.ActiveVersion() != 1 || !tp.Created.Equal(base) {
		t.Fatalf("GetTemplate: %+v, %v", tp, err)
	}
	v, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 0)
	if err != nil || v.Version != 1 || v.Subject != "Hi {{name}}" || v.Text != "text 1" || v.HTML != "<p>html 1</p>" || !v.Created.Equal(base) {
		t.Fatalf("active version: %+v, %v", v, err)
	}
	v2, err := s.AddTemplateVersion(ctx, "acme", "tpl_a", store.TemplateVersion{Subject: "s2", Text: "t2", Created: base.Add(time.Minute)}, false, 0)
	if err != nil || v2.Version != 2 || v2.TemplateID != "tpl_a" || !v2.Created.Equal(base.Add(time.Minute)) {
		t.Fatalf("AddTemplateVersion: %+v, %v", v2, err)
	}
	if v, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 0); err != nil || v.Version != 2 || v.Subject != "s2" || v.HTML != "" {
		t.Fatalf("active after a second version: %+v, %v (the newest is active)", v, err)
	}
	if err := s.ActivateTemplateVersion(ctx, "acme", "tpl_a", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddTemplateVersion(ctx, "acme", "tpl_a", store.TemplateVersion{Subject: "s3"}, false, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 0); err != nil || v.Version != 1 {
		t.Fatalf("active after activating 1 and adding 3: %+v, %v", v, err)
	}
	if v, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 3); err != nil || v.Subject != "s3" {
		t.Fatalf("version 3: %+v, %v", v, err)
	}
	if v4, err := s.AddTemplateVersion(ctx, "acme", "tpl_a", store.TemplateVersion{Subject: "s4"}, true, 0); err != nil || v4.Version != 4 {
		t.Fatalf("version 4: %+v, %v", v4, err)
	}
	tp, _ = s.GetTemplate(ctx, "acme", "tpl_a")
	if tp.Latest != 4 || tp.Activated != 4 || tp.ActiveVersion() != 4 {
		t.Fatalf("after adding 4 activated: %+v", tp)
	}
	if err := s.ActivateTemplateVersion(ctx, "acme", "tpl_a", 9); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("activating a missing version: %v", err)
	}
	if _, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 9); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a missing version: %v", err)
	}
	vs, err := s.ListTemplateVersions(ctx, "acme", "tpl_a")
	if err != nil || len(vs) != 4 || vs[0].Version != 4 || vs[3].Version != 1 || vs[3].Subject != "Hi {{name}}" || vs[3].Text != "" || vs[3].HTML != "" {
		t.Fatalf("ListTemplateVersions: %+v, %v (newest first, no parts)", vs, err)
	}
	addTemplate(t, s, "acme", "tpl_b", 0)
	if err := s.AddTemplate(ctx, store.Template{ID: "tpl_b", Account: "acme"}, store.TemplateVersion{}, 0); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a taken ID: %v", err)
	}
	list, err := s.ListTemplates(ctx, "acme")
	if err != nil || len(list) != 2 || list[0].ID != "tpl_a" || list[1].ID != "tpl_b" {
		t.Fatalf("ListTemplates: %+v, %v", list, err)
	}
	if err := s.DeleteTemplate(ctx, "acme", "tpl_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTemplateVersion(ctx, "acme", "tpl_a", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a version of a deleted template: %v", err)
	}
	if err := s.DeleteTemplate(ctx, "acme", "tpl_a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	if list, _ := s.ListTemplates(ctx, "acme"); len(list) != 1 {
		t.Fatalf("after delete: %+v", list)
	}
}

// No method reaches another account's template.
func testTemplateScoping(t *testing.T, s store.Store) {
	ctx := context.Background()
	addTemplate(t, s, "acme", "tpl_a", 0)
	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s from another account: %v, want ErrNotFound", what, err)
		}
	}
	_, err := s.GetTemplate(ctx, "evil", "tpl_a")
	notFound("GetTemplate", err)
	_, err = s.GetTemplateVersion(ctx, "evil", "tpl_a", 1)
	notFound("GetTemplateVersion", err)
	_, err = s.GetTemplateVersion(ctx, "evil", "tpl_a", 0)
	notFound("GetTemplateVersion active", err)
	_, err = s.ListTemplateVersions(ctx, "evil", "tpl_a")
	notFound("ListTemplateVersions", err)
	_, err = s.AddTemplateVersion(ctx, "evil", "tpl_a", store.TemplateVersion{Subject: "x"}, true, 0)
	notFound("AddTemplateVersion", err)
	notFound("ActivateTemplateVersion", s.ActivateTemplateVersion(ctx, "evil", "tpl_a", 1))
	notFound("DeleteTemplate", s.DeleteTemplate(ctx, "evil", "tpl_a"))
	if list, err := s.ListTemplates(ctx, "evil"); err != nil || len(list) != 0 {
		t.Errorf("ListTemplates of another account: %+v, %v", list, err)
	}
	if tp, err := s.GetTemplate(ctx, "acme", "tpl_a"); err != nil || tp.Latest != 1 || tp.Activated != 0 {
		t.Errorf("the owner's template changed: %+v, %v", tp, err)
	}
}

// The template and version limits refuse with ErrLimit and add nothing.
func testTemplateLimits(t *testing.T, s store.Store) {
	ctx := context.Background()
	addTemplate(t, s, "acme", "tpl_1", 2)
	addTemplate(t, s, "acme", "tpl_2", 2)
	err := s.AddTemplate(ctx, store.Template{ID: "tpl_3", Account: "acme"}, store.TemplateVersion{}, 2)
	if !errors.Is(err, store.ErrLimit) {
		t.Fatalf("a third template with max 2: %v", err)
	}
	addTemplate(t, s, "other", "tpl_3", 2) // another account's count
	if _, err := s.GetTemplate(ctx, "acme", "tpl_3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused template: %v", err)
	}
	if _, err := s.AddTemplateVersion(ctx, "acme", "tpl_1", store.TemplateVersion{Subject: "2"}, false, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddTemplateVersion(ctx, "acme", "tpl_1", store.TemplateVersion{Subject: "3"}, true, 2); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("a third version with max 2: %v", err)
	}
	if tp, _ := s.GetTemplate(ctx, "acme", "tpl_1"); tp.Latest != 2 || tp.Activated != 0 {
		t.Fatalf("after the refused version: %+v", tp)
	}
}

// Versions added concurrently get distinct numbers.
func testTemplateConcurrentVersions(t *testing.T, s store.Store) {
	ctx := context.Background()
	addTemplate(t, s, "acme", "tpl_c", 0)
	const n = 8
	var wg sync.WaitGroup
	got := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.AddTemplateVersion(ctx, "acme", "tpl_c", store.TemplateVersion{Subject: fmt.Sprint(i)}, false, 0)
			if err != nil {
				t.Error(err)
				return
			}
			got <- v.Version
		}()
	}
	wg.Wait()
	close(got)
	seen := map[int]bool{}
	for v := range got {
		if seen[v] || v < 2 || v > n+1 {
			t.Errorf("version number %d twice or out of range", v)
		}
		seen[v] = true
	}
	if tp, _ := s.GetTemplate(ctx, "acme", "tpl_c"); tp.Latest != n+1 {
		t.Errorf("latest %d, want %d", tp.Latest, n+1)
	}
}

// Deleting an account deletes its templates and their versions, and a
// new account of that ID starts without them.
func testTemplateDeleteAccount(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "account", s.AddAccount(ctx, store.Account{ID: "gone", Name: "Gone", Created: base}))
	addTemplate(t, s, "gone", "tpl_g", 0)
	if _, err := s.AddTemplateVersion(ctx, "gone", "tpl_g", store.TemplateVersion{Subject: "2"}, false, 0); err != nil {
		t.Fatal(err)
	}
	addTemplate(t, s, "kept", "tpl_k", 0)
	if _, err := s.DeleteAccount(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	must(t, "account again", s.AddAccount(ctx, store.Account{ID: "gone", Name: "Gone", Created: base}))
	if list, err := s.ListTemplates(ctx, "gone"); err != nil || len(list) != 0 {
		t.Fatalf("templates of the new account: %+v, %v", list, err)
	}
	// Its version rows are gone too: a template of the same ID starts at 1.
	addTemplate(t, s, "gone", "tpl_g", 0)
	if vs, err := s.ListTemplateVersions(ctx, "gone", "tpl_g"); err != nil || len(vs) != 1 {
		t.Fatalf("versions of the new template: %+v, %v", vs, err)
	}
	if _, err := s.GetTemplateVersion(ctx, "kept", "tpl_k", 1); err != nil {
		t.Fatalf("another account's template: %v", err)
	}
}
