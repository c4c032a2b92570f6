package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

// Page sizes of list endpoints.
const (
	defaultPage = 100
	maxPage     = 500
)

// EventTypes are the event types the API knows, in lifecycle order.
var EventTypes = []string{
	store.EventAccepted, store.EventDeferred, store.EventDelivered, store.EventBounced,
	store.EventExpired, store.EventComplained, store.EventSuppressed, store.EventRejected,
	store.EventUnsubscribed, store.EventOpened, store.EventClicked,
	store.EventSandboxed,
	store.EventCancelled,
}

// tracked reports whether t is an event of open and click tracking.
func tracked(t string) bool { return t == store.EventOpened || t == store.EventClicked }

// query checks that the request has only the allowed query parameters.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q := r.URL.Query()
	for k := range q {
		if !slices.Contains(allowed, k) {
			return nil, errInvalid(k, "unknown query parameter %q", k)
		}
	}
	return q, nil
}

func pageLimit(q url.Values) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return defaultPage, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPage {
		return 0, errInvalid("limit", "limit must be an integer from 1 to %d", maxPage)
	}
	return n, nil
}

func parseTime(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errInvalid(name, "%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", name)
	}
	return t, nil
}

type eventPage struct {
	Events     []eventView `json:"events"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (a *api) listEvents(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query() // parameters checked by wrap (route.params)
	var err error
	f := store.EventFilter{Account: c.account(), MessageID: q.Get("message_id"), Recipient: strings.ToLower(q.Get("recipient")), Tag: q.Get("tag")}
	for i, t := range q["type"] {
		if !slices.Contains(EventTypes, t) {
			return errInvalid(fmt.Sprintf("type[%d]", i), "unknown event type %q (one of %s)", t, strings.Join(EventTypes, ", "))
		}
		f.Types = append(f.Types, t)
	}
	if f.Since, err = parseTime(q, "since"); err != nil {
		return err
	}
	if f.Until, err = parseTime(q, "until"); err != nil {
		return err
	}
	if cur := q.Get("cursor"); cur != "" {
		if f.After, err = strconv.ParseInt(cur, 10, 64); err != nil || f.After < 0 {
			return errInvalid("cursor", "invalid cursor: pass next_cursor of the previous page")
		}
	}
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	f.Limit = limit + 1 // one more tells whether there is a next page
	evs, err := a.p.ListEvents(r.Context(), f)
	if err != nil {
		return err
	}
	page := eventPage{Events: make([]eventView, 0, len(evs))}
	if len(evs) > limit {
		evs = evs[:limit]
		page.NextCursor = strconv.FormatInt(evs[len(evs)-1].ID, 10)
	}
	for _, e := range evs {
		page.Events = append(page.Events, toEventView(e))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// suppressionView is a suppression list entry.
type suppressionView struct {
	Address string     `json:"address"`
	Kind    string     `json:"kind"`
	Group   string     `json:"group,omitempty"`
	Reason  string     `json:"reason"`
	Detail  string     `json:"detail,omitempty"`
	Created *time.Time `json:"created,omitempty"`
}

func toSuppressionView(s store.Suppression) suppressionView {
	return suppressionView{Address: s.Address, Kind: s.Kind, Group: s.Group, Reason: s.Reason, Detail: s.Detail, Created: ts(s.Created)}
}

type suppressionPage struct {
	Suppressions []suppressionView `json:"suppressions"`
	NextCursor   string            `json:"next_cursor,omitempty"`
}

// listSuppressions lists every suppression of the account (global and
// per group), or those of one kind (kind=) or one group (group=; empty:
// the global ones).
func (a *api) listSuppressions(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query() // parameters checked by wrap (route.params)
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	f := store.SuppressionFilter{Account: c.account(), Kind: q.Get("kind"), Limit: limit + 1}
	if f.Kind != "" && !store.ValidSuppressionKind(f.Kind) {
		return errInvalid("kind", "kind must be bounce, complaint, unsubscribe or manual")
	}
	if q.Has("group") {
		f.ByGroup, f.Group = true, q.Get("group")
	}
	f.After, f.AfterGroup = parseSuppressionCursor(q.Get("cursor"))
	ss, err := a.p.FindSuppressions(r.Context(), f)
	if err != nil {
		return err
	}
	page := suppressionPage{Suppressions: make([]suppressionView, 0, len(ss))}
	if len(ss) > limit {
		ss = ss[:limit]
		page.NextCursor = suppressionCursor(ss[len(ss)-1])
	}
	for _, s := range ss {
		page.Suppressions = append(page.Suppressions, toSuppressionView(s))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

type suppressionRequest struct {
	Address string `json:"address"`
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Group   string `json:"group,omitempty"`
}

// normAddress validates an address and returns it lower-cased.
func normAddress(field, s string) (string, error) {
	a, err := smtp.ParseAddress(s)
	if err != nil || a.Local == "" || a.Domain == "" {
		return "", errInvalid(field, "not a valid address: %q", s)
	}
	return strings.ToLower(a.String()), nil
}

func (a *api) addSuppression(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req suppressionRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	addr, err := normAddress("address", req.Address)
	if err != nil {
		return err
	}
	if req.Reason == "" {
		req.Reason = store.SuppressManual
	}
	switch req.Reason {
	case store.SuppressManual, store.SuppressHardBounce, store.SuppressComplaint, store.SuppressUnsubscribe:
	default:
		return errInvalid("reason", "reason must be manual, hard_bounce, complaint or unsubscribe")
	}
	if req.Kind == "" {
		req.Kind = store.SuppressionKind(req.Reason)
	}
	if !store.ValidSuppressionKind(req.Kind) {
		return errInvalid("kind", "kind must be bounce, complaint, unsubscribe or manual")
	}
	if err := checkText("detail", req.Detail, 1000); err != nil {
		return err
	}
	if req.Group != "" {
		if _, err := a.p.GetUnsubscribeGroup(r.Context(), c.account(), req.Group); errors.Is(err, store.ErrNotFound) {
			return errInvalid("group", "no unsubscribe group %q in this account", req.Group)
		} else if err != nil {
			return err
		}
	}
	s := store.Suppression{Account: c.account(), Address: addr, Reason: req.Reason, Detail: req.Detail, Kind: req.Kind, Group: req.Group, Created: a.clock.Now()}
	if err := a.p.AddSuppression(r.Context(), s); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toSuppressionView(s))
	return nil
}

// deleteSuppression removes the global suppression of an address, or its
// suppression in one group (group=).
func (a *api) deleteSuppression(w http.ResponseWriter, r *http.Request, c *caller) error {
	addr, err := normAddress("address", r.PathValue("address"))
	if err != nil {
		return err
	}
	if err := a.p.RemoveSuppression(r.Context(), c.account(), addr, r.URL.Query().Get("group")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("address not on the suppression list")
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// webhookView is a webhook; Secret is shown only in the creation and
// rotation responses.
type webhookView struct {
	ID         string     `json:"id"`
	URL        string     `json:"url"`
	EventTypes []string   `json:"event_types"`
	Secret     string     `json:"secret,omitempty"`
	Created    *time.Time `json:"created,omitempty"`
	webhookExtra
}

func toWebhookView(wh store.Webhook) webhookView {
	et := wh.EventTypes
	if et == nil {
		et = []string{}
	}
	return webhookView{ID: wh.ID, URL: wh.URL, EventTypes: et, Created: ts(wh.Created), webhookExtra: toWebhookExtra(wh)}
}

func (a *api) listWebhooks(w http.ResponseWriter, r *http.Request, c *caller) error {
	whs, err := a.p.ListWebhooks(r.Context(), c.account())
	if err != nil {
		return err
	}
	out := struct {
		Webhooks []webhookView `json:"webhooks"`
	}{make([]webhookView, 0, len(whs))}
	for _, wh := range whs {
		out.Webhooks = append(out.Webhooks, toWebhookView(wh))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type webhookRequest struct {
	URL        string        `json:"url"`
	EventTypes []string      `json:"event_types,omitempty"`
	Batch      *batchRequest `json:"batch,omitempty"`
}

func (a *api) addWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req webhookRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	u, err := webhook.ValidateURL(req.URL, a.cfg.WebhookAllowPrivate)
	if err != nil {
		return errInvalid("url", "%s", err.Error())
	}
	for i, t := range req.EventTypes {
		if !slices.Contains(EventTypes, t) {
			return errInvalid(fmt.Sprintf("event_types[%d]", i), "unknown event type %q", t)
		}
	}
	var sb [32]byte
	_, _ = rand.Read(sb[:])
	wh := store.Webhook{
		ID: "wh_" + randomID(16), Account: c.account(), URL: u.String(), EventTypes: req.EventTypes,
		Secret: "whsec_" + base64.RawURLEncoding.EncodeToString(sb[:]), Created: a.clock.Now(),
	}
	if wh.BatchMax, wh.BatchWait, err = req.Batch.settings(); err != nil {
		return err
	}
	if err := a.p.AddWebhookLimited(r.Context(), wh, a.cfg.MaxWebhooks); err != nil {
		if errors.Is(err, store.ErrLimit) {
			return &Error{Status: http.StatusConflict, Code: "limit_reached",
				Message: fmt.Sprintf("this account already has the maximum of %d webhooks; delete one first", a.cfg.MaxWebhooks)}
		}
		return err
	}
	v := toWebhookView(wh)
	v.Secret = wh.Secret
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *api) deleteWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := a.p.DeleteWebhook(r.Context(), c.account(), r.PathValue("id")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such webhook")
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deliveryView struct {
	ID          int64      `json:"id"`
	Event       eventView  `json:"event"`
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

func (a *api) listWebhookDeliveries(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query() // parameters checked by wrap (route.params)
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	whs, err := a.p.ListWebhooks(r.Context(), c.account())
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(whs, func(wh store.Webhook) bool { return wh.ID == id }) {
		return errNotFound("no such webhook")
	}
	ds, err := a.p.ListWebhookDeliveries(r.Context(), c.account(), id, limit)
	if err != nil {
		return err
	}
	out := struct {
		Deliveries []deliveryView `json:"deliveries"`
	}{make([]deliveryView, 0, len(ds))}
	for _, d := range ds {
		dv := deliveryView{ID: d.ID, Event: toEventView(d.Event), Status: d.Status, Attempts: d.Attempts, LastError: d.LastError}
		if d.Status == "pending" {
			dv.NextAttempt = ts(d.NextAttempt)
		}
		out.Deliveries = append(out.Deliveries, dv)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) listDomains(w http.ResponseWriter, r *http.Request, c *caller) error {
	ds, err := a.p.ListAccountDomains(r.Context(), c.account())
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		Domains []string `json:"domains"`
	}{ds})
	return nil
}

type domainAssignment struct {
	Domain  string `json:"domain"`
	Account string `json:"account"`
}

func (a *api) assignDomain(w http.ResponseWriter, r *http.Request, _ *caller) error {
	var req domainAssignment
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	d, err := smtp.NormalizeDomain(req.Domain)
	if err != nil || d == "" || strings.HasPrefix(d, "[") {
		return errInvalid("domain", "not a valid domain: %q", req.Domain)
	}
	if err := a.accountExists(r, "account", req.Account); err != nil {
		return err
	}
	if err := a.p.SetDomainAccount(r.Context(), d, req.Account); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return &Error{Status: http.StatusUnprocessableEntity, Code: "unknown_domain", Field: "domain", Message: fmt.Sprintf("%s is not a domain of this server: add it first (herald domain add %s)", d, d)}
		}
		return err
	}
	writeJSON(w, http.StatusOK, domainAssignment{Domain: d, Account: req.Account})
	return nil
}

// accountExists answers 422 naming field when account is unknown.
func (a *api) accountExists(r *http.Request, field, account string) error {
	if account == "" {
		return errInvalid(field, "an account is required")
	}
	if _, err := a.p.GetAccount(r.Context(), account); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return &Error{Status: http.StatusUnprocessableEntity, Code: "unknown_account", Field: field, Message: fmt.Sprintf("no account %q", account)}
		}
		return err
	}
	return nil
}

// accountView is an account as the API shows it.
type accountView struct {
	ID       string                `json:"id"`
	Name     string                `json:"name,omitempty"`
	Limits   store.AccountLimits   `json:"limits"`
	Tracking store.AccountTracking `json:"tracking"`
	Created  *time.Time            `json:"created,omitempty"`
}

func toAccountView(ac store.Account) accountView {
	return accountView{ID: ac.ID, Name: ac.Name, Limits: ac.Limits, Tracking: ac.Tracking, Created: ts(ac.Created)}
}

func (a *api) listAccounts(w http.ResponseWriter, r *http.Request, _ *caller) error {
	as, err := a.p.ListAccounts(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Accounts []accountView `json:"accounts"`
	}{make([]accountView, 0, len(as))}
	for _, ac := range as {
		out.Accounts = append(out.Accounts, toAccountView(ac))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ValidAccountID reports whether id is a valid account ID: 1 to 63 of
// [a-z0-9-], not starting or ending with '-'.
func ValidAccountID(id string) bool {
	if id == "" || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func checkLimits(field string, l store.AccountLimits) error {
	for _, v := range []struct {
		n string
		v int
	}{{"per_minute", l.PerMinute}, {"per_hour", l.PerHour}, {"per_day", l.PerDay}} {
		if v.v < 0 {
			return errInvalid(field+"."+v.n, "a limit cannot be negative (0 means unlimited)")
		}
	}
	return nil
}

type accountRequest struct {
	ID       string                `json:"id"`
	Name     string                `json:"name,omitempty"`
	Limits   store.AccountLimits   `json:"limits"`
	Tracking store.AccountTracking `json:"tracking"`
}

func (a *api) addAccount(w http.ResponseWriter, r *http.Request, _ *caller) error {
	var req accountRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if !ValidAccountID(req.ID) {
		return errInvalid("id", "an account ID is 1 to 63 characters of a-z, 0-9 and '-'")
	}
	if err := checkText("name", req.Name, 200); err != nil {
		return err
	}
	if err := checkLimits("limits", req.Limits); err != nil {
		return err
	}
	ac := store.Account{ID: req.ID, Name: req.Name, Limits: req.Limits, Tracking: req.Tracking, Created: a.clock.Now()}
	if err := a.p.AddAccount(r.Context(), ac); err != nil {
		if errors.Is(err, store.ErrExists) {
			return &Error{Status: http.StatusConflict, Code: "account_exists", Field: "id", Message: fmt.Sprintf("account %q already exists", req.ID)}
		}
		return err
	}
	writeJSON(w, http.StatusCreated, toAccountView(ac))
	return nil
}

// limitsPatch updates only the limits given.
type limitsPatch struct {
	PerMinute *int `json:"per_minute,omitempty"`
	PerHour   *int `json:"per_hour,omitempty"`
	PerDay    *int `json:"per_day,omitempty"`
}

type accountPatch struct {
	Limits   *limitsPatch   `json:"limits"`
	Tracking *trackingPatch `json:"tracking"`
}

func (a *api) patchAccount(w http.ResponseWriter, r *http.Request, _ *caller) error {
	var req accountPatch
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if req.Limits == nil && req.Tracking == nil {
		return errInvalid("limits", "nothing to change: give limits or tracking")
	}
	ac, err := a.p.GetAccount(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such account")
		}
		return err
	}
	l := ac.Limits
	if req.Limits != nil {
		for _, p := range []struct {
			src *int
			dst *int
		}{{req.Limits.PerMinute, &l.PerMinute}, {req.Limits.PerHour, &l.PerHour}, {req.Limits.PerDay, &l.PerDay}} {
			if p.src != nil {
				*p.dst = *p.src
			}
		}
		if err := checkLimits("limits", l); err != nil {
			return err
		}
	}
	if _, err := a.patchTracking(r.Context(), &ac, req.Tracking); err != nil {
		return err
	}
	if req.Limits != nil {
		if err := a.p.UpdateAccountLimits(r.Context(), ac.ID, l); err != nil {
			return err
		}
		ac.Limits = l
	}
	writeJSON(w, http.StatusOK, toAccountView(ac))
	return nil
}

// deleteAccount handles DELETE /v1/accounts/{id}[?force=true]. Without
// force an account that still owns domains or users or has messages in the
// queue is refused (409 account_in_use, nothing changes); with force its
// domains and users go back to the default account and its queued
// messages are deleted. Either way everything the account owns (keys,
// webhooks and their deliveries, suppressions, idempotency keys, routes,
// events) is deleted.
func (a *api) deleteAccount(w http.ResponseWriter, r *http.Request, _ *caller) error {
	force := false
	if v := r.URL.Query().Get("force"); v != "" { // the only parameter (route.params)
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return errInvalid("force", "force must be true or false")
		}
	}
	id := r.PathValue("id")
	if id == store.DefaultAccount {
		return &Error{Status: http.StatusConflict, Code: "account_in_use", Message: "the default account cannot be deleted"}
	}
	if _, err := a.p.DeleteAccount(r.Context(), id, force); err != nil {
		var inUse *store.AccountInUseError
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errNotFound("no such account")
		case errors.As(err, &inUse):
			return &Error{Status: http.StatusConflict, Code: "account_in_use", Message: inUseMessage(inUse)}
		case errors.Is(err, store.ErrExists):
			return &Error{Status: http.StatusConflict, Code: "account_in_use", Message: "the account cannot be deleted"}
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// inUseMessage tells the operator what keeps an account from being deleted
// and how to proceed.
func inUseMessage(e *store.AccountInUseError) string {
	var what []string
	if e.Domains > 0 {
		what = append(what, plural(e.Domains, "domain", "domains"))
	}
	if e.Users > 0 {
		what = append(what, plural(e.Users, "SMTP user", "SMTP users"))
	}
	if e.Messages > 0 {
		what = append(what, plural(e.Messages, "queued message", "queued messages"))
	}
	return fmt.Sprintf("account %s still has %s: assign its domains to another account and let its queue drain, "+
		"or delete with ?force=true (domains and users go back to the default account, queued messages are deleted)",
		e.Account, strings.Join(what, ", "))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// keyView is an API key without its secret; Token is set only on creation.
type keyView struct {
	ID       string     `json:"id"`
	Account  string     `json:"account"`
	Name     string     `json:"name,omitempty"`
	Scopes   []string   `json:"scopes"`
	Created  *time.Time `json:"created,omitempty"`
	LastUsed *time.Time `json:"last_used,omitempty"`
	Token    string     `json:"token,omitempty"`
}

func toKeyView(k store.APIKey) keyView {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{} // an array, as documented, never null
	}
	return keyView{ID: k.ID, Account: k.Account, Name: k.Name, Scopes: scopes, Created: ts(k.Created), LastUsed: ts(k.LastUsed)}
}

// targetAccount is the account a key-management request acts on: the
// caller's, or for an operator any existing account.
func (a *api) targetAccount(r *http.Request, c *caller, field, requested string) (string, error) {
	if requested == "" || requested == c.account() {
		return c.account(), nil
	}
	if !c.isOperator() {
		return "", errForbidden("only an operator key may manage another account's keys")
	}
	if err := a.accountExists(r, field, requested); err != nil {
		return "", err
	}
	return requested, nil
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query() // parameters checked by wrap (route.params)
	acct, err := a.targetAccount(r, c, "account", q.Get("account"))
	if err != nil {
		return err
	}
	ks, err := a.p.ListAPIKeys(r.Context(), acct)
	if err != nil {
		return err
	}
	out := struct {
		Keys []keyView `json:"keys"`
	}{make([]keyView, 0, len(ks))}
	for _, k := range ks {
		out.Keys = append(out.Keys, toKeyView(k))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type keyRequest struct {
	Account string   `json:"account,omitempty"`
	Name    string   `json:"name,omitempty"`
	Scopes  []string `json:"scopes"`
}

// ParseScopes validates a scope list, dropping duplicates.
func ParseScopes(list []string) ([]string, error) {
	var out []string
	for _, s := range list {
		if !ValidScope(s) {
			return nil, fmt.Errorf("unknown scope %q (send, read or admin)", s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("at least one scope is needed (send, read or admin)")
	}
	return out, nil
}

func (a *api) addKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req keyRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	acct, err := a.targetAccount(r, c, "account", req.Account)
	if err != nil {
		return err
	}
	scopes, err := ParseScopes(req.Scopes)
	if err != nil {
		return errInvalid("scopes", "%s", err.Error())
	}
	if err := checkText("name", req.Name, 200); err != nil {
		return err
	}
	token, id, hash := NewToken()
	k := store.APIKey{ID: id, Account: acct, Name: req.Name, Scopes: scopes, SecretHash: hash, Created: a.clock.Now()}
	if err := a.p.AddAPIKey(r.Context(), k); err != nil {
		return err
	}
	v := toKeyView(k)
	v.Token = token
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("id")
	k, err := a.p.GetAPIKey(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && k.Account != c.account() && !c.isOperator()) {
		return errNotFound("no such API key")
	}
	if err != nil {
		return err
	}
	if err := a.p.DeleteAPIKey(r.Context(), k.Account, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such API key")
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
