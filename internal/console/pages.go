package console

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// page is what every template gets.
type page struct {
	Title    string
	Nav      string
	V        *viewer
	CSRF     string
	Now      time.Time
	Hostname string
	Flash    string
	Data     any
}

type errorPage struct{ Title, Message string }

// flashes are the confirmations an action's redirect may show.
var flashes = []string{"retry scheduled", "deleted", "bounced", "added", "removed"}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// render writes a page; a template error is logged and answered with 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, v *viewer, status int, name string, data any) {
	t := c.pages[name]
	p := page{Title: name, Nav: name, V: v, Now: c.clock.Now(), Hostname: c.cfg.Hostname, Data: data}
	if f := r.URL.Query().Get("done"); slices.Contains(flashes, f) {
		p.Flash = f // only the console's own words: a link cannot put text on the page
	}
	if v != nil {
		p.CSRF = v.s.CSRF
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("console template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	c.log.Error("console", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request, v *viewer) {
	if v == nil {
		v, _ = c.session(r)
	}
	c.render(w, r, v, http.StatusNotFound, "error", errorPage{Title: "Not found", Message: "There is nothing here, or it is not yours to see."})
}

// scope is the account a page shows: a member's own, always; for an
// operator the "account" parameter, or "" (every account) when all is
// true, else the default account.
func (c *Console) scope(r *http.Request, v *viewer, all bool) string {
	if !v.Operator {
		return v.Account
	}
	if a := r.FormValue("account"); a != "" && len(a) <= 64 {
		return a
	}
	if all {
		return ""
	}
	return store.DefaultAccount
}

// --- Overview ---

type overviewData struct {
	O       Overview
	Types   []string
	Refresh int
	Account string
	Oldest  time.Duration
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, true)
	now := c.clock.Now()
	o, err := c.deps.Overview.Overview(r.Context(), acct, now)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := overviewData{O: o, Types: CountTypes, Refresh: c.cfg.RefreshSeconds, Account: acct}
	if !o.Queue.Oldest.IsZero() {
		d.Oldest = now.Sub(o.Queue.Oldest)
	}
	c.render(w, r, v, http.StatusOK, "overview", d)
}

// overviewJSON is the charts' and counters' data for the page's script.
func (c *Console) overviewJSON(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, true)
	now := c.clock.Now()
	o, err := c.deps.Overview.Overview(r.Context(), acct, now)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	type series struct {
		Range  string             `json:"range"`
		Times  []int64            `json:"t"`
		Counts map[string][]int64 `json:"counts"`
	}
	out := struct {
		Series  []series         `json:"series"`
		Totals  map[string]int64 `json:"totals"`
		Rate    string           `json:"delivery_rate"`
		P50     string           `json:"latency_p50"`
		P99     string           `json:"latency_p99"`
		Queue   int              `json:"queue_messages"`
		Rcpts   int              `json:"queue_recipients"`
		Oldest  string           `json:"oldest"`
		Types   []string         `json:"types"`
		Updated string           `json:"updated"`
	}{Totals: o.Totals, Queue: o.Queue.Messages, Rcpts: o.Queue.Recipients, Types: CountTypes,
		P50: funcs["dur"].(func(time.Duration) string)(o.LatencyP50), P99: funcs["dur"].(func(time.Duration) string)(o.LatencyP99),
		Rate: "—", Oldest: "—", Updated: now.UTC().Format("15:04:05")}
	if o.HasRate {
		out.Rate = funcs["pct"].(func(float64) string)(o.DeliveryRate)
	}
	if !o.Queue.Oldest.IsZero() {
		out.Oldest = now.Sub(o.Queue.Oldest).Round(time.Second).String()
	}
	for _, s := range o.Series {
		js := series{Range: s.Range, Counts: s.Counts}
		for _, t := range s.Times {
			js.Times = append(js.Times, t.Unix())
		}
		out.Series = append(out.Series, js)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// --- Destinations ---

func (c *Console) destinations(w http.ResponseWriter, r *http.Request, v *viewer) {
	ds, window, err := c.deps.Destinations.Destinations(r.Context(), c.scope(r, v, true), c.clock.Now())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, v, http.StatusOK, "destinations", struct {
		List   []DestinationStats
		Window string
	}{ds, window})
}

// --- Messages ---

// messageQuery is the search form.
type messageQuery struct {
	ID, Sender, Recipient, Domain, Status, Since, Until string
	since, until                                        time.Time
}

func (q *messageQuery) parse(r *http.Request) string {
	get := func(k string) string {
		s := strings.TrimSpace(r.FormValue(k))
		if len(s) > 320 {
			s = s[:320]
		}
		return s
	}
	q.ID, q.Sender, q.Recipient, q.Domain, q.Status = get("id"), strings.ToLower(get("sender")), strings.ToLower(get("recipient")),
		strings.ToLower(get("domain")), get("status")
	q.Since, q.Until = get("since"), get("until")
	var problem string
	for _, f := range []struct {
		s string
		t *time.Time
	}{{q.Since, &q.since}, {q.Until, &q.until}} {
		if f.s == "" {
			continue
		}
		t, err := time.Parse("2006-01-02T15:04", f.s)
		if err != nil {
			if t, err = time.Parse("2006-01-02", f.s); err != nil {
				problem = "Times are YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)."
				continue
			}
		}
		*f.t = t
	}
	return problem
}

func (q *messageQuery) matchMessage(m *store.Message) bool {
	if q.ID != "" && m.ID != q.ID {
		return false
	}
	if q.Sender != "" && !strings.Contains(strings.ToLower(m.Sender), q.Sender) {
		return false
	}
	if !q.since.IsZero() && m.Received.Before(q.since) || !q.until.IsZero() && !m.Received.Before(q.until) {
		return false
	}
	if q.Recipient == "" && q.Domain == "" && q.Status == "" {
		return true
	}
	for _, r := range m.Recipients {
		if (q.Recipient == "" || strings.Contains(strings.ToLower(r.Address), q.Recipient)) &&
			(q.Domain == "" || strings.HasSuffix(strings.ToLower(r.Address), "@"+q.Domain)) &&
			(q.Status == "" || string(r.Status) == q.Status) {
			return true
		}
	}
	return false
}

func (q *messageQuery) matchEvent(e store.Event) bool {
	if q.Sender != "" && !strings.Contains(strings.ToLower(e.Sender), q.Sender) {
		return false
	}
	if q.Recipient != "" && !strings.Contains(strings.ToLower(e.Recipient), q.Recipient) {
		return false
	}
	if q.Domain != "" && !strings.HasSuffix(strings.ToLower(e.Recipient), "@"+q.Domain) {
		return false
	}
	return true
}

// Search bounds: the queue scan and the events read per search.
const (
	searchMaxQueue  = 20000
	searchMaxEvents = 5000
	searchShow      = 200
)

type messagesData struct {
	Q        messageQuery
	Problem  string
	Queued   []*store.Message
	Found    []foundMessage
	Statuses []string
	Types    []string
	Account  string
	Truncate bool
}

var queueStatuses = []string{string(store.StatusQueued), string(store.StatusDeferred)}
var eventTypes = []string{store.EventAccepted, store.EventDelivered, store.EventDeferred, store.EventBounced,
	store.EventExpired, store.EventComplained, store.EventSuppressed, store.EventRejected, store.EventUnsubscribed, store.EventOpened, store.EventClicked, store.EventSandboxed, store.EventCancelled}

// messages searches the queue (pending messages) and the event log
// (everything that happened), both limited to the viewer's account.
func (c *Console) messages(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, true)
	d := messagesData{Statuses: queueStatuses, Types: eventTypes, Account: acct}
	d.Problem = d.Q.parse(r)
	ctx := r.Context()
	queueStatus := d.Q.Status == "" || slices.Contains(queueStatuses, d.Q.Status)
	if queueStatus {
		if d.Q.ID != "" {
			m, err := c.st.Get(ctx, d.Q.ID)
			if err == nil && (acct == "" || m.Account == acct) && d.Q.matchMessage(m) {
				d.Queued = append(d.Queued, m)
			} else if err != nil && !errors.Is(err, store.ErrNotFound) {
				c.fail(w, r, err)
				return
			}
		} else {
			after := ""
			for seen := 0; seen < searchMaxQueue && len(d.Queued) < searchShow; {
				msgs, err := c.st.List(ctx, after, 500)
				if err != nil {
					c.fail(w, r, err)
					return
				}
				for _, m := range msgs {
					if (acct == "" || m.Account == acct) && d.Q.matchMessage(m) && len(d.Queued) < searchShow {
						d.Queued = append(d.Queued, m)
					}
				}
				seen += len(msgs)
				if len(msgs) < 500 {
					break
				}
				after = msgs[len(msgs)-1].ID
			}
		}
	}
	since := d.Q.since
	if since.IsZero() && d.Q.ID == "" {
		since = c.clock.Now().Add(-24 * time.Hour) // the event log is read forward: bound the start
	}
	f := store.EventFilter{Account: acct, MessageID: d.Q.ID, Since: since, Until: d.Q.until, Limit: 1000}
	if d.Q.Status != "" && !queueStatus {
		f.Types = []string{d.Q.Status}
	} else if d.Q.Status == string(store.StatusDeferred) {
		f.Types = []string{store.EventDeferred}
	}
	if d.Q.Recipient != "" && strings.Contains(d.Q.Recipient, "@") {
		f.Recipient = d.Q.Recipient
	}
	// The newest events: read forward from a start bounded by the window.
	var evs []store.Event
	for read := 0; read < searchMaxEvents; {
		page, err := c.st.ListEvents(ctx, f)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, e := range page {
			if d.Q.matchEvent(e) {
				evs = append(evs, e)
			}
		}
		read += len(page)
		if len(page) < f.Limit {
			break
		}
		f.After = page[len(page)-1].ID
		d.Truncate = read >= searchMaxEvents
	}
	d.Found = groupByMessage(evs)
	if len(d.Found) > searchShow {
		d.Found = d.Found[:searchShow]
	}
	c.render(w, r, v, http.StatusOK, "messages", d)
}

// foundMessage is one message of the event search: its events summed up.
type foundMessage struct {
	ID         string
	Account    string
	Sender     string
	Recipients []string // up to 5
	More       int      // recipients beyond those
	First      time.Time
	Last       time.Time
	LastType   string
	LastReply  string
	Events     int
}

// groupByMessage sums events (oldest first) up per message, the most
// recently active message first.
func groupByMessage(evs []store.Event) []foundMessage {
	by := make(map[string]*foundMessage)
	var order []*foundMessage
	for _, e := range evs {
		m := by[e.MessageID]
		if m == nil {
			m = &foundMessage{ID: e.MessageID, Account: e.Account, First: e.Time}
			by[e.MessageID] = m
			order = append(order, m)
		}
		m.Events++
		m.Last, m.LastType = e.Time, e.Type
		if e.Sender != "" {
			m.Sender = e.Sender
		}
		if e.Reply != "" {
			m.LastReply = e.Reply
		}
		if e.Recipient != "" && !slices.Contains(m.Recipients, e.Recipient) {
			if len(m.Recipients) < 5 {
				m.Recipients = append(m.Recipients, e.Recipient)
			} else {
				m.More++
			}
		}
	}
	out := make([]foundMessage, len(order))
	for i, m := range order {
		out[i] = *m
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out
}

type timelineData struct {
	ID       string
	Msg      *store.Message
	Header   []headerField
	Events   []store.Event
	Webhooks []webhookSent
	Pending  bool
	CanAct   bool
	Account  string
	Why      []string // the explanation's sentences (Deps.Explain)
}

type webhookSent struct {
	Webhook string
	URL     string
	D       store.WebhookDelivery
}

// message shows a message's timeline. Another account's message is not
// found: the queue row and the events are read with the viewer's account.
func (c *Console) message(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	if len(id) > 64 {
		c.notFound(w, r, v)
		return
	}
	ctx := r.Context()
	acct := c.scope(r, v, true)
	d := timelineData{ID: id, CanAct: !v.ReadOnly}
	m, err := c.st.Get(ctx, id)
	switch {
	case err == nil && (acct == "" || m.Account == acct):
		d.Msg = m
		d.Account = m.Account
		d.Header = c.headerOf(ctx, id)
		for _, rc := range m.Recipients {
			if !rc.Status.Final() {
				d.Pending = true
			}
		}
	case err != nil && !errors.Is(err, store.ErrNotFound):
		c.fail(w, r, err)
		return
	}
	evs, err := c.st.ListEvents(ctx, store.EventFilter{Account: acct, MessageID: id, Limit: 1000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d.Events = evs
	if d.Msg == nil && len(evs) == 0 {
		c.notFound(w, r, v)
		return
	}
	if d.Account == "" && len(evs) > 0 {
		d.Account = evs[0].Account
	}
	// Webhooks sent for the message's events.
	if d.Account != "" {
		hooks, err := c.st.ListWebhooks(ctx, d.Account)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, h := range hooks {
			dels, err := c.st.ListWebhookDeliveries(ctx, d.Account, h.ID, 1000)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			for _, dl := range dels {
				if dl.Event.MessageID == id {
					d.Webhooks = append(d.Webhooks, webhookSent{Webhook: h.ID, URL: h.URL, D: dl})
				}
			}
		}
	}
	if c.deps.Explain != nil {
		// The explanation is a help, not the page: without it the page
		// still shows the queue and the timeline.
		if why, err := c.deps.Explain(ctx, id, acct); err == nil {
			d.Why = why
		} else {
			c.log.Warn("console: explaining a message", "id", id, "err", err)
		}
	}
	c.render(w, r, v, http.StatusOK, "message", d)
}

// messageAction retries, deletes or bounces a queued message of the
// viewer's account.
func (c *Console) messageAction(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, action := r.PathValue("id"), r.PathValue("action")
	ctx := r.Context()
	m, err := c.st.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && !v.Operator && m.Account != v.Account {
		c.notFound(w, r, v)
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var done string
	switch action {
	case "retry":
		err, done = c.st.Retry(ctx, id, c.clock.Now()), "retry scheduled"
	case "delete":
		err, done = c.st.Delete(ctx, id), "deleted"
	case "bounce":
		if c.deps.Bouncer == nil {
			http.Error(w, "bouncing is not available", http.StatusNotImplemented)
			return
		}
		err, done = c.deps.Bouncer.BounceMessage(ctx, id, "bounced by "+v.Name+" from the console"), "bounced"
	default:
		c.notFound(w, r, v)
		return
	}
	if errors.Is(err, store.ErrLeaseLost) {
		c.render(w, r, v, http.StatusConflict, "error", errorPage{Title: "Delivery in progress",
			Message: "The message is being delivered right now; try again in a moment."})
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.Info("console queue action", "action", action, "id", id, "by", v.Name)
	target := "/messages/" + id
	if action != "retry" {
		target = "/messages?id=" + id
	}
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	http.Redirect(w, r, target+sep+"done="+done, http.StatusSeeOther)
}

// --- Suppressions ---

func (c *Console) suppressionList(r *http.Request, acct string) ([]store.Suppression, bool, error) {
	q := strings.ToLower(strings.TrimSpace(r.FormValue("q")))
	var out []store.Suppression
	after := ""
	more := false
	for read := 0; read < 100000; {
		page, err := c.st.ListSuppressions(r.Context(), acct, after, 1000)
		if err != nil {
			return nil, false, err
		}
		for _, s := range page {
			if q == "" || strings.Contains(s.Address, q) {
				out = append(out, s)
			}
		}
		read += len(page)
		if len(page) < 1000 {
			return out, more, nil
		}
		after = page[len(page)-1].Address
		more = read >= 100000
	}
	return out, more, nil
}

func (c *Console) suppressions(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	list, more, err := c.suppressionList(r, acct)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	shown := list
	if len(shown) > 500 {
		shown, more = shown[:500], true
	}
	c.render(w, r, v, http.StatusOK, "suppressions", struct {
		List    []store.Suppression
		Q       string
		Account string
		More    bool
		Total   int
	}{shown, r.FormValue("q"), acct, more, len(list)})
}

// csvCell defuses spreadsheet formulas: a cell starting with = + - @ or a
// control character is prefixed with a quote.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (c *Console) suppressionsCSV(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	list, _, err := c.suppressionList(r, acct)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="suppressions-`+strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, acct)+`.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"address", "reason", "detail", "created"})
	for _, s := range list {
		_ = cw.Write([]string{csvCell(s.Address), csvCell(s.Reason), csvCell(s.Detail), s.Created.UTC().Format(time.RFC3339)})
	}
	cw.Flush()
}

func validAddress(a string) bool {
	local, dom, ok := strings.Cut(a, "@")
	return ok && local != "" && dom != "" && len(a) <= 254 && !strings.ContainsAny(a, " \t\r\n<>\"\\,;")
}

func (c *Console) addSuppression(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	addr := strings.ToLower(strings.TrimSpace(r.PostFormValue("address")))
	if !validAddress(addr) {
		c.render(w, r, v, http.StatusBadRequest, "error", errorPage{Title: "Not an address", Message: "Give a full e-mail address."})
		return
	}
	detail := strings.TrimSpace(r.PostFormValue("detail"))
	if len(detail) > 500 {
		detail = detail[:500]
	}
	if err := c.st.AddSuppression(r.Context(), store.Suppression{Account: acct, Address: addr, Reason: store.SuppressManual,
		Detail: detail, Created: c.clock.Now()}); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/suppressions?account="+acct+"&done=added", http.StatusSeeOther)
}

func (c *Console) deleteSuppression(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	addr := strings.ToLower(strings.TrimSpace(r.PostFormValue("address")))
	err := c.st.DeleteSuppression(r.Context(), acct, addr)
	if errors.Is(err, store.ErrNotFound) {
		c.notFound(w, r, v)
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/suppressions?account="+acct+"&done=removed", http.StatusSeeOther)
}

// --- Domains ---

// domainsOf returns the domains the viewer may see: a member's account's,
// or every local and account domain for an operator.
func (c *Console) domainsOf(r *http.Request, v *viewer) ([]string, error) {
	ctx := r.Context()
	if !v.Operator {
		return c.st.ListAccountDomains(ctx, v.Account)
	}
	ds, err := c.st.ListDomains(ctx)
	if err != nil {
		return nil, err
	}
	accts, err := c.st.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range accts {
		more, err := c.st.ListAccountDomains(ctx, a.ID)
		if err != nil {
			return nil, err
		}
		ds = append(ds, more...)
	}
	slices.Sort(ds)
	return slices.Compact(ds), nil
}

type domainRow struct {
	Domain  string
	Account string
	Keys    int
	Reports int
}

func (c *Console) domains(w http.ResponseWriter, r *http.Request, v *viewer) {
	ds, err := c.domainsOf(r, v)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ctx := r.Context()
	rows := make([]domainRow, 0, len(ds))
	for _, d := range ds {
		row := domainRow{Domain: d}
		row.Account, _ = c.st.DomainAccount(ctx, d)
		if ks, err := c.st.ListDKIMKeys(ctx, d); err == nil {
			row.Keys = len(ks)
		}
		if reps, err := c.st.ListDMARCReports(ctx, d); err == nil {
			row.Reports = len(reps)
		}
		rows = append(rows, row)
	}
	c.render(w, r, v, http.StatusOK, "domains", rows)
}

// dmarcSource is one sending IP's share of a domain's DMARC reports.
type dmarcSource struct {
	IP                 string
	Count              int64
	DKIMPass, SPFPass  int64
	Pass               int64 // DKIM or SPF aligned pass: DMARC pass
	Reporters          []string
	HeaderFroms        []string
	Dispositions       []string
	DKIMRate, SPFRate  float64
	PassRate           float64
	reporters, headers map[string]bool
}

type dmarcSummary struct {
	Reports   int
	Messages  int64
	Pass      int64
	PassRate  float64
	Sources   []*dmarcSource
	Reporters []string
	First     time.Time
	Last      time.Time
}

func summariseDMARC(reps []store.DMARCReport) dmarcSummary {
	var s dmarcSummary
	by := make(map[string]*dmarcSource)
	reporters := make(map[string]bool)
	for _, kept := range reps {
		var rep dmarcreport.Report
		if err := json.Unmarshal(kept.Data, &rep); err != nil {
			continue
		}
		s.Reports++
		reporters[kept.Reporter] = true
		if s.First.IsZero() || kept.Begin.Before(s.First) {
			s.First = kept.Begin
		}
		if kept.End.After(s.Last) {
			s.Last = kept.End
		}
		for _, rec := range rep.Records {
			ip := "?"
			if rec.SourceIP != (netip.Addr{}) {
				ip = rec.SourceIP.String()
			}
			src := by[ip]
			if src == nil {
				src = &dmarcSource{IP: ip, reporters: map[string]bool{}, headers: map[string]bool{}}
				by[ip] = src
			}
			src.Count += rec.Count
			if rec.DKIM == "pass" {
				src.DKIMPass += rec.Count
			}
			if rec.SPF == "pass" {
				src.SPFPass += rec.Count
			}
			if rec.DKIM == "pass" || rec.SPF == "pass" {
				src.Pass += rec.Count
			}
			if !src.reporters[kept.Reporter] && len(src.Reporters) < 10 {
				src.reporters[kept.Reporter] = true
				src.Reporters = append(src.Reporters, kept.Reporter)
			}
			if rec.HeaderFrom != "" && !src.headers[rec.HeaderFrom] && len(src.HeaderFroms) < 10 {
				src.headers[rec.HeaderFrom] = true
				src.HeaderFroms = append(src.HeaderFroms, rec.HeaderFrom)
			}
			if rec.Disposition != "" && !slices.Contains(src.Dispositions, rec.Disposition) && len(src.Dispositions) < 5 {
				src.Dispositions = append(src.Dispositions, rec.Disposition)
			}
		}
	}
	for _, src := range by {
		src.DKIMRate, src.SPFRate, src.PassRate = ratio(src.DKIMPass, src.Count), ratio(src.SPFPass, src.Count), ratio(src.Pass, src.Count)
		s.Messages += src.Count
		s.Pass += src.Pass
		s.Sources = append(s.Sources, src)
	}
	s.PassRate = ratio(s.Pass, s.Messages)
	sort.Slice(s.Sources, func(i, j int) bool {
		if s.Sources[i].Count != s.Sources[j].Count {
			return s.Sources[i].Count > s.Sources[j].Count
		}
		return s.Sources[i].IP < s.Sources[j].IP
	})
	if len(s.Sources) > 200 {
		s.Sources = s.Sources[:200]
	}
	for r := range reporters {
		s.Reporters = append(s.Reporters, r)
	}
	slices.Sort(s.Reporters)
	return s
}

type dkimRow struct {
	Selector, Algorithm string
	Active              bool
	Created             time.Time
}

type domainData struct {
	Domain  string
	Account string
	Report  *dnscheck.Report
	DNSErr  string
	Keys    []dkimRow
	DMARC   dmarcSummary
	Checked bool
}

func (c *Console) domain(w http.ResponseWriter, r *http.Request, v *viewer) {
	d := strings.ToLower(strings.TrimSuffix(r.PathValue("domain"), "."))
	ds, err := c.domainsOf(r, v)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if !slices.Contains(ds, d) {
		c.notFound(w, r, v)
		return
	}
	ctx := r.Context()
	data := domainData{Domain: d}
	data.Account, _ = c.st.DomainAccount(ctx, d)
	keys, err := c.st.ListDKIMKeys(ctx, d)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, k := range keys { // never the private key
		data.Keys = append(data.Keys, dkimRow{Selector: k.Selector, Algorithm: k.Algorithm, Active: k.Active, Created: k.Created})
	}
	reps, err := c.st.ListDMARCReports(ctx, d)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data.DMARC = summariseDMARC(reps)
	if r.FormValue("check") != "" && c.deps.DNS != nil {
		data.Checked = true
		rep, err := c.deps.DNS.CheckDomain(ctx, d)
		if err != nil {
			data.DNSErr = err.Error()
		} else {
			data.Report = &rep
		}
	}
	c.render(w, r, v, http.StatusOK, "domain", data)
}

// --- Accounts, API keys, webhooks ---

type accountRow struct {
	A       store.Account
	Domains []string
	Keys    int
	Hooks   int
}

func (c *Console) accounts(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	var accts []store.Account
	if v.Operator {
		var err error
		if accts, err = c.st.ListAccounts(ctx); err != nil {
			c.fail(w, r, err)
			return
		}
	} else {
		a, err := c.st.GetAccount(ctx, v.Account)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		accts = []store.Account{a}
	}
	rows := make([]accountRow, 0, len(accts))
	for _, a := range accts {
		row := accountRow{A: a}
		row.Domains, _ = c.st.ListAccountDomains(ctx, a.ID)
		if ks, err := c.st.ListAPIKeys(ctx, a.ID); err == nil {
			row.Keys = len(ks)
		}
		if hs, err := c.st.ListWebhooks(ctx, a.ID); err == nil {
			row.Hooks = len(hs)
		}
		rows = append(rows, row)
	}
	c.render(w, r, v, http.StatusOK, "accounts", rows)
}

func (c *Console) apiKeys(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	keys, err := c.st.ListAPIKeys(r.Context(), acct)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for i := range keys {
		keys[i].SecretHash = nil
	}
	c.render(w, r, v, http.StatusOK, "apikeys", struct {
		Account string
		Keys    []store.APIKey
	}{acct, keys})
}

func (c *Console) webhooks(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	hooks, err := c.st.ListWebhooks(r.Context(), acct)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for i := range hooks {
		hooks[i].Secret = ""
	}
	c.render(w, r, v, http.StatusOK, "webhooks", struct {
		Account string
		Hooks   []store.Webhook
	}{acct, hooks})
}

func (c *Console) webhook(w http.ResponseWriter, r *http.Request, v *viewer) {
	acct := c.scope(r, v, false)
	id := r.PathValue("id")
	hooks, err := c.st.ListWebhooks(r.Context(), acct)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	i := slices.IndexFunc(hooks, func(h store.Webhook) bool { return h.ID == id })
	if i < 0 {
		c.notFound(w, r, v)
		return
	}
	dels, err := c.st.ListWebhookDeliveries(r.Context(), acct, id, 200)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	hooks[i].Secret = ""
	c.render(w, r, v, http.StatusOK, "webhook", struct {
		Account    string
		Hook       store.Webhook
		Deliveries []store.WebhookDelivery
	}{acct, hooks[i], dels})
}

// --- Alerts and blocklists (operators) ---

func (c *Console) alerts(w http.ResponseWriter, r *http.Request, v *viewer) {
	var d struct {
		Available       bool
		Firing, History []Alert
	}
	if c.deps.Alerts != nil {
		d.Available = true
		var err error
		if d.Firing, err = c.deps.Alerts.Firing(r.Context()); err == nil {
			d.History, err = c.deps.Alerts.History(r.Context(), 200)
		}
		if err != nil {
			c.fail(w, r, fmt.Errorf("alerts: %w", err))
			return
		}
	}
	c.render(w, r, v, http.StatusOK, "alerts", d)
}

func (c *Console) blocklists(w http.ResponseWriter, r *http.Request, v *viewer) {
	var d struct {
		Available bool
		Listed    int
		List      []Listing
	}
	if c.deps.Blocklists != nil {
		d.Available = true
		var err error
		if d.List, err = c.deps.Blocklists.Listings(r.Context()); err != nil {
			c.fail(w, r, fmt.Errorf("blocklists: %w", err))
			return
		}
		for _, l := range d.List {
			if l.Listed {
				d.Listed++
			}
		}
	}
	c.render(w, r, v, http.StatusOK, "blocklists", d)
}

type headerField struct{ Name, Value string }

// shownHeaders are the header fields the timeline shows.
var shownHeaders = []string{"From", "To", "Subject", "Date", "Message-ID"}

// headerOf reads the shown header fields of a queued message (the first
// 64 KiB of its body), MIME words decoded; nothing when unreadable.
func (c *Console) headerOf(ctx context.Context, id string) []headerField {
	rc, err := c.st.OpenBody(ctx, id)
	if err != nil {
		return nil
	}
	defer rc.Close()
	msg, err := mail.ReadMessage(io.LimitReader(rc, 64<<10))
	if err != nil {
		return nil
	}
	dec := new(mime.WordDecoder)
	var out []headerField
	for _, name := range shownHeaders {
		v := msg.Header.Get(name)
		if v == "" {
			continue
		}
		if d, err := dec.DecodeHeader(v); err == nil {
			v = d
		}
		if len(v) > 1000 {
			v = v[:1000] + "…"
		}
		out = append(out, headerField{name, v})
	}
	return out
}
