package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// trackingTests is the part of the suite for store.TrackingSettings.
var trackingTests = []test{
	{"AccountTracking", testAccountTracking},
}

// testAccountTracking: an account's tracking default is off unless set,
// kept by AddAccount, replaced by UpdateAccountTracking without touching
// the limits, listed, and an unknown account is ErrNotFound.
func testAccountTracking(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.AddAccount(ctx, store.Account{ID: "plain", Name: "Plain", Limits: store.AccountLimits{PerHour: 5}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAccount(ctx, store.Account{ID: "opener", Tracking: store.AccountTracking{Opens: true}}); err != nil {
		t.Fatal(err)
	}
	get := func(id string) store.Account {
		t.Helper()
		a, err := s.GetAccount(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := get("plain"); a.Tracking != (store.AccountTracking{}) {
		t.Errorf("new account: tracking %+v, want off", a.Tracking)
	}
	if a := get("opener"); a.Tracking != (store.AccountTracking{Opens: true}) {
		t.Errorf("added with opens: tracking %+v", a.Tracking)
	}
	if a := get(store.DefaultAccount); a.Tracking != (store.AccountTracking{}) {
		t.Errorf("default account: tracking %+v, want off", a.Tracking)
	}
	if err := s.UpdateAccountTracking(ctx, "plain", store.AccountTracking{Clicks: true}); err != nil {
		t.Fatal(err)
	}
	a := get("plain")
	if a.Tracking != (store.AccountTracking{Clicks: true}) || a.Limits.PerHour != 5 || a.Name != "Plain" {
		t.Errorf("after update: %+v", a)
	}
	if err := s.UpdateAccountLimits(ctx, "plain", store.AccountLimits{PerDay: 9}); err != nil {
		t.Fatal(err)
	}
	if a := get("plain"); a.Tracking != (store.AccountTracking{Clicks: true}) {
		t.Errorf("limits update changed tracking: %+v", a.Tracking)
	}
	list, err := s.ListAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, a := range list {
		switch a.ID {
		case "plain":
			seen++
			if a.Tracking != (store.AccountTracking{Clicks: true}) {
				t.Errorf("listed plain: %+v", a.Tracking)
			}
		case "opener":
			seen++
			if a.Tracking != (store.AccountTracking{Opens: true}) {
				t.Errorf("listed opener: %+v", a.Tracking)
			}
		}
	}
	if seen != 2 {
		t.Errorf("listed %d of the 2 accounts", seen)
	}
	if err := s.UpdateAccountTracking(ctx, "ghost", store.AccountTracking{Opens: true}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown account: %v, want ErrNotFound", err)
	}
}
