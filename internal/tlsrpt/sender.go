package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
)

// MediaType is the media type of a gzipped report (RFC 8460 §6.4).
const MediaType = "application/tlsrpt+gzip"

// ParseRecord parses a _smtp._tls TXT record ("v=TLSRPTv1;
// rua=mailto:tlsrpt@example.com,https://example.com/tlsrpt") and returns
// its mailto: and https: reporting URIs (others are ignored).
func ParseRecord(txt string) ([]string, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return nil, fmt.Errorf("tlsrpt: record %q does not start with v=TLSRPTv1", txt)
	}
	var out []string
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		for u := range strings.SplitSeq(v, ",") {
			u = strings.TrimSpace(u)
			lu := strings.ToLower(u)
			if strings.HasPrefix(lu, "mailto:") || strings.HasPrefix(lu, "https://") {
				out = append(out, u)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tlsrpt: record %q has no usable rua", txt)
	}
	return out, nil
}

// Lookup returns the reporting URIs of domain from its single
// _smtp._tls.<domain> TXT record starting with v=TLSRPTv1.
func Lookup(ctx context.Context, r resolve.Resolver, domain string) ([]string, error) {
	txts, err := r.LookupTXT(ctx, "_smtp._tls."+domain)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: looking up _smtp._tls.%s: %w", domain, err)
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=TLSRPTv1") {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, fmt.Errorf("tlsrpt: _smtp._tls.%s has %d TLSRPTv1 records, want 1: %w", domain, len(recs), resolve.ErrNotFound)
	}
	return ParseRecord(recs[0])
}

// Defaults of the Sender.
const (
	// DefaultFlushInterval is how often the counts go to the store.
	DefaultFlushInterval = time.Minute
	// DefaultSendDelay is how long after UTC midnight the previous day's
	// reports go out: every node has flushed its counts of the day by then.
	DefaultSendDelay = 5 * time.Minute
	// DefaultClaimFor is how long a node may take to send one domain's
	// report before another node may take the sending over.
	DefaultClaimFor = 10 * time.Minute
	// KeepDays is how long counts and claims stay in the store: a report
	// that could not be sent by then is dropped, and a claim keeps a
	// report from being sent twice for that long.
	KeepDays = 7
)

// Sender delivers the daily reports of the counts in the store. Each node
// runs one; a domain's report for a day is sent by the node that claims it
// first (store.TLSReports), so it goes out once. Fields are set before
// first use.
type Sender struct {
	Aggregator   *Aggregator      // its store holds the counts and the claims
	Resolver     resolve.Resolver // for _smtp._tls records (and https rua hosts with the default client)
	Clock        clock.Clock      // default clock.Real
	Organization string           // "organization-name", e.g. "Example Corp"
	Submitter    string           // our host name, e.g. "mail.example.com"
	Contact      string           // "contact-info", e.g. "postmaster@example.com"
	From         string           // envelope and header sender of mailto reports
	// Submit queues a report message for mailto: rua (wired to the spool,
	// which DKIM-signs it as RFC 8460 §5.3 requires).
	Submit func(ctx context.Context, from, to string, msg []byte) error
	// HTTPClient posts to https: rua; nil = a client resolving through
	// Resolver with the system roots and a 30s timeout.
	HTTPClient *http.Client
	Log        *slog.Logger
	// FlushInterval, SendDelay and ClaimFor: zero means the defaults.
	FlushInterval, SendDelay, ClaimFor time.Duration
}

func (s *Sender) clock() clock.Clock {
	if s.Clock == nil {
		return clock.Real{}
	}
	return s.Clock
}

func (s *Sender) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run flushes the Aggregator's counts every FlushInterval and sends the
// reports of every finished day shortly after each UTC midnight until ctx
// ends; then it flushes a last time.
func (s *Sender) Run(ctx context.Context) error {
	every := orDefault(s.FlushInterval, DefaultFlushInterval)
	lastSent := time.Time{}
	for {
		now := s.clock().Now().UTC()
		if due := s.sendingDay(now); !due.Equal(lastSent) {
			if err := s.SendDue(ctx); err != nil && ctx.Err() == nil {
				s.log().Warn("tlsrpt: sending reports", slog.String("err", err.Error()))
			}
			lastSent = due
		} else {
			s.flush(ctx)
		}
		t := clock.NewTimer(s.clock(), every)
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			s.flush(fctx)
			cancel()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// flush adds the counts held in memory to the store, logging failures.
func (s *Sender) flush(ctx context.Context) {
	dropped, err := s.Aggregator.Flush(ctx)
	if err != nil {
		s.log().Warn("tlsrpt: "+err.Error(), slog.String("retry", "next flush"))
	}
	if dropped > 0 {
		s.log().Warn("tlsrpt: too many different session outcomes between two flushes; some were not counted",
			slog.Int64("sessions", dropped))
	}
}

// sendingDay returns the first day whose reports are not due yet at now:
// the days before it are finished and flushed by every node.
func (s *Sender) sendingDay(now time.Time) time.Time {
	return now.UTC().Add(-orDefault(s.SendDelay, DefaultSendDelay)).Truncate(24 * time.Hour)
}

// SendDue flushes the counts, sends the reports of every finished day
// that no node has sent yet, and drops the counts and claims older than
// KeepDays.
func (s *Sender) SendDue(ctx context.Context) error {
	s.flush(ctx)
	today := s.sendingDay(s.clock().Now())
	days, err := s.Aggregator.st.TLSCountDays(ctx, today)
	if err != nil {
		return err
	}
	var errs []error
	for _, day := range days {
		errs = append(errs, s.SendDay(ctx, day))
	}
	errs = append(errs, s.Aggregator.st.PruneTLSReports(ctx, today.Add(-KeepDays*24*time.Hour)))
	return errors.Join(errs...)
}

// SendDay sends the reports of day that no other node sends: for each
// policy domain, it claims the report, sends it to the domain's rua, and
// records it sent, which drops its counts (reports that fail are not
// retried). Domains without a TLS-RPT record are skipped (and their counts
// dropped).
func (s *Sender) SendDay(ctx context.Context, day time.Time) error {
	reps, err := s.Aggregator.Report(ctx, day)
	if err != nil {
		return err
	}
	claimFor := orDefault(s.ClaimFor, DefaultClaimFor)
	var errs []error
	for _, r := range reps {
		now := s.clock().Now()
		token, err := s.Aggregator.st.ClaimTLSReport(ctx, r.Domain, day, now, now.Add(claimFor))
		if err != nil {
			errs = append(errs, fmt.Errorf("tlsrpt: claiming the report for %s: %w", r.Domain, err))
			continue
		}
		if token == "" {
			continue // sent, or being sent, by another node
		}
		errs = append(errs, s.send(ctx, &r))
		if err := s.Aggregator.st.FinishTLSReport(ctx, r.Domain, day, token); err != nil {
			errs = append(errs, fmt.Errorf("tlsrpt: recording the report for %s sent: %w", r.Domain, err))
		}
	}
	return errors.Join(errs...)
}

// send delivers one report to its domain's rua.
func (s *Sender) send(ctx context.Context, r *ReportJSON) error {
	ruas, err := Lookup(ctx, s.Resolver, r.Domain)
	if err != nil {
		if errors.Is(err, resolve.ErrNotFound) {
			return nil
		}
		return err
	}
	s.fill(r)
	gz, err := Gzip(r)
	if err != nil {
		return err
	}
	var errs []error
	for _, rua := range ruas {
		if err := s.deliver(ctx, r, rua, gz); err != nil {
			errs = append(errs, fmt.Errorf("tlsrpt: report for %s to %s: %w", r.Domain, rua, err))
			continue
		}
		s.log().Info("tlsrpt: report sent", slog.String("domain", r.Domain), slog.String("rua", rua))
	}
	return errors.Join(errs...)
}

// fill sets the submitter's fields of r.
func (s *Sender) fill(r *ReportJSON) {
	r.OrganizationName = s.Organization
	r.ContactInfo = s.Contact
	r.ReportID = fmt.Sprintf("%s_%s@%s", r.DateRange.Start.Format(time.RFC3339), r.Domain, s.Submitter)
}

// Gzip returns the gzipped JSON of r.
func Gzip(r *ReportJSON) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(r); err != nil {
		return nil, fmt.Errorf("tlsrpt: encoding report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("tlsrpt: compressing report: %w", err)
	}
	return buf.Bytes(), nil
}

func (s *Sender) deliver(ctx context.Context, r *ReportJSON, rua string, gz []byte) error {
	u, err := url.Parse(rua)
	if err != nil {
		return err
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return s.post(ctx, rua, gz)
	case "mailto":
		to := u.Opaque
		if to == "" {
			to = u.Path
		}
		if to, err = url.PathUnescape(to); err != nil || !strings.Contains(to, "@") {
			return fmt.Errorf("bad mailto address %q", u.Opaque)
		}
		if s.Submit == nil {
			return errors.New("no Submit function for mailto reports")
		}
		msg, err := s.Message(r, to, gz)
		if err != nil {
			return err
		}
		return s.Submit(ctx, s.From, to, msg)
	}
	return fmt.Errorf("unsupported scheme %q", u.Scheme)
}

func (s *Sender) post(ctx context.Context, rua string, gz []byte) error {
	c := s.HTTPClient
	if c == nil {
		c = s.defaultClient()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rua, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", MediaType)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // draining only
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	return nil
}

func (s *Sender) defaultClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var ips []netip.Addr
		if ip, perr := netip.ParseAddr(host); perr == nil {
			ips = []netip.Addr{ip}
		} else if ips, err = s.Resolver.LookupIP(ctx, host); err != nil {
			return nil, err
		}
		var d net.Dialer
		var last error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:     dial,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		},
	}
}

// Message builds the RFC 8460 §5.3 report message to the address to:
// multipart/report; report-type="tlsrpt" with a text part and the gzipped
// report as an application/tlsrpt+gzip attachment.
func (s *Sender) Message(r *ReportJSON, to string, gz []byte) ([]byte, error) {
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("tlsrpt: random boundary: %w", err)
	}
	boundary := "tlsrpt-" + hex.EncodeToString(rnd[:])
	start, end := r.DateRange.Start.Unix(), r.DateRange.End.Unix()
	filename := fmt.Sprintf("%s!%s!%d!%d.json.gz", s.Submitter, r.Domain, start, end)
	var b bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	h("From", "<"+s.From+">")
	h("To", "<"+to+">")
	h("Subject", mime.QEncoding.Encode("utf-8", fmt.Sprintf("Report Domain: %s Submitter: %s Report-ID: <%s>", r.Domain, s.Submitter, r.ReportID)))
	h("Date", s.clock().Now().Format(time.RFC1123Z))
	h("Message-ID", fmt.Sprintf("<tlsrpt.%s@%s>", hex.EncodeToString(rnd[:8]), s.Submitter))
	h("TLS-Report-Domain", r.Domain)
	h("TLS-Report-Submitter", s.Submitter)
	h("MIME-Version", "1.0")
	h("Content-Type", fmt.Sprintf("multipart/report; report-type=\"tlsrpt\"; boundary=\"%s\"", boundary))
	b.WriteString("\r\n")
	b.WriteString("This is a multipart message in MIME format.\r\n\r\n")
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "This is an aggregate TLS report (RFC 8460) from %s for %s,\r\n", s.Submitter, r.Domain)
	fmt.Fprintf(&b, "covering %s to %s.\r\n\r\n", r.DateRange.Start.Format(time.RFC3339), r.DateRange.End.Format(time.RFC3339))
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Type: " + MediaType + "\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	fmt.Fprintf(&b, "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n", filename)
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes(), nil
}
