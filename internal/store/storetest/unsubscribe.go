package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// unsubscribeTests is the part of the suite for store.Unsubscribes.
var unsubscribeTests = []test{
	{"Groups", testUnsubscribeGroups},
	{"GroupSuppressions", testGroupSuppressions},
	{"Unsubscribe", testUnsubscribe},
}

func testUnsubscribeGroups(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "a")
	addAccount(t, s, "b")
	g := store.UnsubscribeGroup{Account: "a", ID: "news", Name: "Newsletter", Description: "weekly", Created: base}
	must(t, "AddUnsubscribeGroup", s.AddUnsubscribeGroup(ctx, g, 2))
	expectExists(t, "AddUnsubscribeGroup again", s.AddUnsubscribeGroup(ctx, g, 2))
	must(t, "same ID, other account", s.AddUnsubscribeGroup(ctx, store.UnsubscribeGroup{Account: "b", ID: "news", Name: "B news"}, 2))
	must(t, "AddUnsubscribeGroup 2", s.AddUnsubscribeGroup(ctx, store.UnsubscribeGroup{Account: "a", ID: "alerts", Name: "Alerts", Created: base}, 2))
	if err := s.AddUnsubscribeGroup(ctx, store.UnsubscribeGroup{Account: "a", ID: "third", Name: "x"}, 2); !errors.Is(err, store.ErrLimit) {
		t.Errorf("third group over a limit of 2: %v, want ErrLimit", err)
	}
	got, err := s.GetUnsubscribeGroup(ctx, "a", "news")
	must(t, "GetUnsubscribeGroup", err)
	if got != g {
		t.Errorf("GetUnsubscribeGroup = %+v, want %+v", got, g)
	}
	_, err = s.GetUnsubscribeGroup(ctx, "b", "alerts")
	expectNotFound(t, "another account's group", err)
	list, err := s.ListUnsubscribeGroups(ctx, "a")
	must(t, "ListUnsubscribeGroups", err)
	if len(list) != 2 || list[0].ID != "alerts" || list[1].ID != "news" {
		t.Errorf("ListUnsubscribeGroups = %+v", list)
	}
	must(t, "UpdateUnsubscribeGroup", s.UpdateUnsubscribeGroup(ctx, store.UnsubscribeGroup{Account: "a", ID: "news", Name: "News", Description: "monthly"}))
	if got, _ := s.GetUnsubscribeGroup(ctx, "a", "news"); got.Name != "News" || got.Description != "monthly" || !got.Created.Equal(base) {
		t.Errorf("updated group = %+v", got)
	}
	expectNotFound(t, "update of another account's group", s.UpdateUnsubscribeGroup(ctx, store.UnsubscribeGroup{Account: "b", ID: "alerts", Name: "x"}))

	// Deleting a group deletes its suppressions, not the others.
	must(t, "group suppression", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "u@example.com", Group: "news", Reason: store.SuppressUnsubscribe}))
	must(t, "global suppression", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "v@example.com", Reason: store.SuppressManual}))
	must(t, "b's group suppression", s.AddSuppression(ctx, store.Suppression{Account: "b", Address: "u@example.com", Group: "news", Reason: store.SuppressUnsubscribe}))
	expectNotFound(t, "delete of another account's group", s.DeleteUnsubscribeGroup(ctx, "b", "alerts"))
	must(t, "DeleteUnsubscribeGroup", s.DeleteUnsubscribeGroup(ctx, "a", "news"))
	expectNotFound(t, "DeleteUnsubscribeGroup again", s.DeleteUnsubscribeGroup(ctx, "a", "news"))
	if ok, _ := s.SuppressedFor(ctx, "a", "u@example.com", "news"); ok {
		t.Error("the deleted group's suppression is still there")
	}
	if ok, _ := s.SuppressedFor(ctx, "b", "u@example.com", "news"); !ok {
		t.Error("deleting a's group removed b's suppression")
	}
	if ok, _ := s.IsSuppressed(ctx, "a", "v@example.com"); !ok {
		t.Error("deleting a group removed a global suppression")
	}

	// Deleting the account deletes its groups.
	if _, err := s.DeleteAccount(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListUnsubscribeGroups(ctx, "a"); len(list) != 0 {
		t.Errorf("groups of a deleted account: %+v", list)
	}
}

func testGroupSuppressions(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, sp := range []store.Suppression{
		{Account: "a", Address: "Bounced@Example.com", Reason: store.SuppressHardBounce, Detail: "550", Created: base},
		{Account: "a", Address: "c@example.com", Reason: store.SuppressComplaint, Created: base},
		{Account: "a", Address: "m@example.com", Reason: store.SuppressManual, Created: base},
		{Account: "a", Address: "m@example.com", Reason: store.SuppressUnsubscribe, Group: "news", Created: base},
		{Account: "a", Address: "m@example.com", Reason: store.SuppressUnsubscribe, Group: "alerts", Created: base},
		{Account: "a", Address: "n@example.com", Reason: store.SuppressUnsubscribe, Group: "news", Created: base},
		{Account: "a", Address: "x@example.com", Reason: "custom", Kind: store.KindUnsubscribe, Created: base},
	} {
		must(t, "AddSuppression "+sp.Address+" "+sp.Group, s.AddSuppression(ctx, sp))
	}
	all, err := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a"})
	must(t, "FindSuppressions", err)
	want := []string{"bounced@example.com//bounce", "c@example.com//complaint", "m@example.com//manual",
		"m@example.com/alerts/unsubscribe", "m@example.com/news/unsubscribe", "n@example.com/news/unsubscribe", "x@example.com//unsubscribe"}
	if got := suppressionKeys(all); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("FindSuppressions = %v, want %v", got, want)
	}
	// Pages of two, through an address with three rows.
	var paged []store.Suppression
	f := store.SuppressionFilter{Account: "a", Limit: 2}
	for i := 0; i < 10; i++ {
		page, err := s.FindSuppressions(ctx, f)
		must(t, "FindSuppressions page", err)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		f.After, f.AfterGroup = page[len(page)-1].Address, page[len(page)-1].Group
	}
	if got := suppressionKeys(paged); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paged = %v, want %v", got, want)
	}
	byGroup, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a", ByGroup: true, Group: "news"})
	if got := suppressionKeys(byGroup); fmt.Sprint(got) != "[m@example.com/news/unsubscribe n@example.com/news/unsubscribe]" {
		t.Errorf("group news = %v", got)
	}
	global, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a", ByGroup: true, Kind: store.KindUnsubscribe})
	if got := suppressionKeys(global); fmt.Sprint(got) != "[x@example.com//unsubscribe]" {
		t.Errorf("global unsubscribes = %v", got)
	}
	if other, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "b"}); len(other) != 0 {
		t.Errorf("another account sees %v", other)
	}
	if !all[0].Created.Equal(base) || all[0].Detail != "550" || all[0].Account != "a" || all[0].Reason != store.SuppressHardBounce {
		t.Errorf("first row = %+v", all[0])
	}

	// The older methods see the global list only.
	list, err := s.ListSuppressions(ctx, "a", "", 100)
	must(t, "ListSuppressions", err)
	if got := suppressionKeys(list); fmt.Sprint(got) != "[bounced@example.com//bounce c@example.com//complaint m@example.com//manual x@example.com//unsubscribe]" {
		t.Errorf("ListSuppressions = %v", got)
	}
	for _, c := range []struct {
		addr, group  string
		global, for_ bool
	}{
		{"n@example.com", "news", false, true},
		{"n@example.com", "alerts", false, false},
		{"n@example.com", "", false, false},
		{"N@EXAMPLE.COM", "news", false, true},
		{"bounced@example.com", "news", true, true},
		{"bounced@example.com", "", true, true},
		{"nobody@example.com", "news", false, false},
	} {
		g, err := s.IsSuppressed(ctx, "a", c.addr)
		must(t, "IsSuppressed", err)
		f, err := s.SuppressedFor(ctx, "a", c.addr, c.group)
		must(t, "SuppressedFor", err)
		if g != c.global || f != c.for_ {
			t.Errorf("%s in %q: IsSuppressed %v SuppressedFor %v, want %v %v", c.addr, c.group, g, f, c.global, c.for_)
		}
		if f, _ := s.SuppressedFor(ctx, "b", c.addr, c.group); f {
			t.Errorf("%s suppressed for account b", c.addr)
		}
	}

	// Removing: one group's row, not the others; DeleteSuppression is the
	// global row.
	expectNotFound(t, "RemoveSuppression of a missing group row", s.RemoveSuppression(ctx, "a", "n@example.com", "alerts"))
	expectNotFound(t, "DeleteSuppression of a group-only address", s.DeleteSuppression(ctx, "a", "n@example.com"))
	must(t, "RemoveSuppression", s.RemoveSuppression(ctx, "a", "M@example.com", "news"))
	must(t, "DeleteSuppression", s.DeleteSuppression(ctx, "a", "m@example.com"))
	rest, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a", After: "c@example.com", AfterGroup: "~"})
	if got := suppressionKeys(rest); fmt.Sprint(got) != "[m@example.com/alerts/unsubscribe n@example.com/news/unsubscribe x@example.com//unsubscribe]" {
		t.Errorf("after removals = %v", got)
	}
}

func suppressionKeys(l []store.Suppression) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = s.Address + "/" + s.Group + "/" + s.Kind
	}
	return out
}

func testUnsubscribe(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "a")
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "wh", Account: "a", URL: "https://hooks.example/", Secret: "s"}))
	sp := store.Suppression{Account: "a", Address: "U@example.com", Group: "news", Reason: store.SuppressUnsubscribe, Kind: store.KindUnsubscribe, Created: base}
	ev := store.Event{Time: base, Type: store.EventUnsubscribed, Account: "a", MessageID: "M1", Recipient: "u@example.com",
		Tags: []string{"t1"}, Metadata: map[string]string{"k": "v"}}
	added, err := s.Unsubscribe(ctx, sp, ev)
	must(t, "Unsubscribe", err)
	if !added {
		t.Fatal("first Unsubscribe did not add")
	}
	for i := 0; i < 2; i++ {
		sp.Created = base.Add(time.Hour)
		added, err = s.Unsubscribe(ctx, sp, ev)
		must(t, "Unsubscribe again", err)
		if added {
			t.Error("a repeated Unsubscribe added again")
		}
	}
	evs := listEvents(t, s, store.EventFilter{Account: "a", Types: []string{store.EventUnsubscribed}})
	if len(evs) != 1 || evs[0].MessageID != "M1" || evs[0].Recipient != "u@example.com" || fmt.Sprint(evs[0].Tags) != "[t1]" || evs[0].Metadata["k"] != "v" {
		t.Fatalf("unsubscribed events = %+v", evs)
	}
	ds, err := s.ListWebhookDeliveries(ctx, "a", "wh", 10)
	must(t, "ListWebhookDeliveries", err)
	if len(ds) != 1 || ds[0].Event.ID != evs[0].ID {
		t.Errorf("webhook deliveries = %+v", ds)
	}
	if ok, _ := s.SuppressedFor(ctx, "a", "u@example.com", "news"); !ok {
		t.Error("not suppressed in the group")
	}
	if ok, _ := s.IsSuppressed(ctx, "a", "u@example.com"); ok {
		t.Error("a group unsubscribe suppressed globally")
	}
	got, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a"})
	if len(got) != 1 || got[0].Kind != store.KindUnsubscribe || !got[0].Created.Equal(base) {
		t.Errorf("suppressions = %+v", got)
	}
	// Another group (here: global) is another suppression and event; an
	// address already suppressed there (manually) gets neither.
	sp.Group = ""
	if added, err := s.Unsubscribe(ctx, sp, ev); err != nil || !added {
		t.Errorf("global Unsubscribe: %v %v", added, err)
	}
	must(t, "manual", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "w@example.com", Reason: store.SuppressManual}))
	sp.Address, ev.Recipient = "w@example.com", "w@example.com"
	if added, err := s.Unsubscribe(ctx, sp, ev); err != nil || added {
		t.Errorf("Unsubscribe of a suppressed address: %v %v", added, err)
	}
	if evs := listEvents(t, s, store.EventFilter{Account: "a", Types: []string{store.EventUnsubscribed}}); len(evs) != 2 {
		t.Errorf("%d unsubscribed events, want 2", len(evs))
	}
	if got, _ := s.FindSuppressions(ctx, store.SuppressionFilter{Account: "a", After: "w"}); len(got) != 1 || got[0].Kind != store.KindManual {
		t.Errorf("the manual suppression changed: %+v", got)
	}
}
