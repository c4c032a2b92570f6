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

// Sender delivers the Aggregator's daily reports. Fields are set before
// first use.
type Sender struct {
	Aggregator   *Aggregator
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

// Run sends the reports of every finished day shortly after each UTC
// midnight until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	for {
		if err := s.SendDue(ctx); err != nil {
			s.log().Warn("tlsrpt: sending reports", slog.String("err", err.Error()))
		}
		now := s.clock().Now().UTC()
		next := now.Truncate(24 * time.Hour).Add(24*time.Hour + 5*time.Minute)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// SendDue sends and forgets the reports of every day before today (UTC).
func (s *Sender) SendDue(ctx context.Context) error {
	today := s.clock().Now().UTC().Truncate(24 * time.Hour)
	var errs []error
	for _, day := range s.Aggregator.Days() {
		if !day.Before(today) {
			continue
		}
		errs = append(errs, s.SendDay(ctx, day))
	}
	return errors.Join(errs...)
}

// SendDay sends the reports of day to each policy domain's rua and then
// forgets the day's counts (reports that fail are not retried). Domains
// without a TLS-RPT record are skipped.
func (s *Sender) SendDay(ctx context.Context, day time.Time) error {
	var errs []error
	for _, r := range s.Aggregator.Report(day) {
		ruas, err := Lookup(ctx, s.Resolver, r.Domain)
		if err != nil {
			if !errors.Is(err, resolve.ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		s.fill(&r)
		gz, err := Gzip(&r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rua := range ruas {
			if err := s.deliver(ctx, &r, rua, gz); err != nil {
				errs = append(errs, fmt.Errorf("tlsrpt: report for %s to %s: %w", r.Domain, rua, err))
				continue
			}
			s.log().Info("tlsrpt: report sent", slog.String("domain", r.Domain), slog.String("rua", rua))
		}
	}
	s.Aggregator.Forget(day)
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
