package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/webhook"
)

// SourceAlert is the source recorded with alert mail (store.Message.Source).
const SourceAlert = "alert"

// Submitter is the acceptance path.
type Submitter interface {
	Submit(ctx context.Context, req *submit.Request) (submit.Result, error)
}

// Title is the one-line summary of a notification: "[Herald] FIRING:
// bounce_rate on mx.example.com". It is ASCII: the subject of an alert
// (a destination, a listed address) is reduced to printable ASCII.
func (n Notification) Title() string {
	state := "RESOLVED"
	if n.Firing {
		state = "FIRING"
	}
	what := n.Rule.Name
	if n.Subject != "" {
		what += " " + printable(n.Subject, 100)
	}
	return fmt.Sprintf("[Herald] %s: %s on %s", state, what, printable(n.Hostname, 255))
}

// Text is the notification's body for people.
func (n Notification) Text() string {
	var b strings.Builder
	state := "resolved"
	if n.Firing {
		state = "fired"
	}
	fmt.Fprintf(&b, "Alert %s %s at %s on %s.\n\n", n.Key, state, n.At.UTC().Format(time.RFC3339), n.Hostname)
	fmt.Fprintf(&b, "Rule:    %s (%s)\n", n.Rule.Name, n.Rule.Describe())
	fmt.Fprintf(&b, "Measure: %s\n", n.Detail)
	if !n.Firing && !n.Since.IsZero() {
		fmt.Fprintf(&b, "It had fired at %s (%s ago).\n", n.Since.UTC().Format(time.RFC3339), n.At.Sub(n.Since).Round(time.Second))
	}
	if n.Firing {
		fmt.Fprintf(&b, "\nThis alert notifies again when it resolves. To silence the rule:\n  herald alert silence %s --for 2h\n", n.Rule.Name)
	}
	return b.String()
}

// printable keeps the printable ASCII of s (others become '?'), at most
// max bytes: safe in a header field, a log line or a chat message.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			break
		}
		if r < 0x80 && unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// Mailer notifies by mail through the acceptance path, as Herald's own
// mail (submit.System) from the null sender, to each of To.
type Mailer struct {
	Submit   Submitter
	From     string // header From, e.g. postmaster@mx.example.com
	To       []string
	Hostname string // for the Message-ID
}

// Message returns the RFC 5322 message of n.
func (m *Mailer) Message(n Notification) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", "Herald alerts <"+m.From+">")
	hdr("To", strings.Join(m.To, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", n.Title()))
	hdr("Date", n.At.Format(time.RFC1123Z))
	hdr("Message-ID", message.NewID(m.Hostname))
	hdr("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies
	hdr("X-Herald-Alert", printable(n.Key, 200))
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(strings.ToValidUTF8(n.Text(), "?"), "\n", "\r\n")))
	qp.Close()
	return b.Bytes()
}

// Notify submits the message.
func (m *Mailer) Notify(ctx context.Context, n Notification) error {
	if len(m.To) == 0 {
		return nil
	}
	rcpts := make([]submit.Recipient, len(m.To))
	for i, to := range m.To {
		rcpts[i] = submit.Recipient{Address: to, Notify: "NEVER"}
	}
	_, err := m.Submit.Submit(ctx, &submit.Request{
		Identity:   submit.Identity{Kind: submit.System, Source: SourceAlert},
		From:       "", // the null sender: a bounce of an alert loops nowhere
		Recipients: rcpts,
		Body:       bytes.NewReader(m.Message(n)),
	})
	if err != nil {
		return fmt.Errorf("alert: mail %s: %w", n.Key, err)
	}
	return nil
}

// Webhook notifies by POSTing Slack-compatible JSON: {"text": ...} for
// chat, and the alert's fields under "herald" for programs.
type Webhook struct {
	URL    string
	Client *http.Client // webhook.NewPublicClient unless private addresses are allowed
	Clock  clock.Clock
	// Attempts is how many times a POST is tried (default 3), Backoff the
	// wait before the second (doubling; default 2s).
	Attempts int
	Backoff  time.Duration
}

// Payload is the JSON body of a webhook notification.
type Payload struct {
	Text   string        `json:"text"`
	Herald PayloadFields `json:"herald"`
}

// PayloadFields are the structured fields of a notification.
type PayloadFields struct {
	Alert     string    `json:"alert"`
	Rule      string    `json:"rule"`
	Kind      string    `json:"kind"`
	Subject   string    `json:"subject,omitempty"`
	State     string    `json:"state"` // "firing" or "resolved"
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Detail    string    `json:"detail"`
	Since     time.Time `json:"since"`
	At        time.Time `json:"at"`
	Host      string    `json:"host"`
}

// maxResponse bounds what is read of a webhook's answer.
const maxResponse = 64 << 10

// Notify POSTs the payload, retrying a failure up to Attempts times.
func (w *Webhook) Notify(ctx context.Context, n Notification) error {
	state := "resolved"
	if n.Firing {
		state = "firing"
	}
	body, err := json.Marshal(Payload{
		Text: slackEscape(n.Title() + "\n" + n.Detail),
		Herald: PayloadFields{Alert: n.Key, Rule: n.Rule.Name, Kind: n.Rule.Kind, Subject: n.Subject, State: state,
			Value: n.Value, Threshold: n.Rule.Threshold, Detail: n.Detail, Since: n.Since.UTC(), At: n.At.UTC(), Host: n.Hostname},
	})
	if err != nil {
		return fmt.Errorf("alert: webhook payload: %w", err)
	}
	attempts := w.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	wait := w.Backoff
	if wait <= 0 {
		wait = 2 * time.Second
	}
	clk := w.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	var last string
	for i := range attempts {
		if i > 0 {
			t := clock.NewTimer(clk, wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("alert: webhook for %s: %w (last error: %s)", n.Key, ctx.Err(), last)
			case <-t.C():
			}
			wait *= 2
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("alert: webhook request: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Herald-Alerts")
		_, text := webhook.Do(w.Client, req, maxResponse)
		if text == "" {
			return nil
		}
		last = text
	}
	return fmt.Errorf("alert: webhook for %s failed %d times, last: %s", n.Key, attempts, last)
}

// Notifiers sends each notification through every notifier; one failing
// does not stop the others.
type Notifiers []Notifier

// Notify implements Notifier.
func (ns Notifiers) Notify(ctx context.Context, n Notification) error {
	var errs []error
	for _, x := range ns {
		if err := x.Notify(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// slackEscape escapes the three characters Slack's message format gives
// a meaning (<!channel>, <url|text>), so that measured text cannot
// mention or link.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
