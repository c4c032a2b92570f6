// Package wellknown serves what mail senders and mail clients fetch from a
// domain's web hosts: the MTA-STS policy (RFC 8461) at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, Thunderbird's
// autoconfiguration (config-v1.1.xml, at autoconfig.DOMAIN and under
// /.well-known/autoconfig/ of the domain) and Microsoft's autodiscover
// (POST /autodiscover/autodiscover.xml), for the local domains only.
//
// Everything a client sends (Host, the emailaddress parameter, the
// autodiscover request body) is attacker-controlled: a domain is used only
// after it is found to be a local domain, and every value in a response is
// escaped by encoding/xml.
package wellknown

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Paths served.
const (
	MTASTSPath              = "/.well-known/mta-sts.txt"
	AutoconfigPath          = "/mail/config-v1.1.xml"
	WellKnownAutoconfigPath = "/.well-known/autoconfig/mail/config-v1.1.xml"
	AutodiscoverPath        = "/autodiscover/autodiscover.xml"
)

const maxAutodiscoverBody = 16 << 10

// Directory is what the handler reads of the store.
type Directory interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	GetDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error)
}

// Server is a mail client's view of one of Herald's services.
type Server struct {
	Host string // host name clients connect to
	Port int    // 0: not offered
}

// Config configures a Handler.
type Config struct {
	// Hostname is server.hostname: the MX host of the MTA-STS policy
	// unless MX is set, and the host of the submission servers.
	Hostname string
	// MX are the policy's mx lines (nil: Hostname).
	MX []string
	// MaxAge is the policy's max_age (0: one week).
	MaxAge time.Duration
	// Submission (STARTTLS, 587) and Submissions (implicit TLS, 465) are
	// the ports mail clients are told to send through; 0: not offered.
	Submission, Submissions int
	// IMAP, when its Port is set, is an IMAP server (Dovecot on the
	// Maildir, ...) to announce: implicit TLS on 993, STARTTLS otherwise.
	IMAP Server
	// Autoconfig turns the client configuration documents on.
	Autoconfig bool
	Dir        Directory
	Log        *slog.Logger // nil: discarded
}

// Handler serves the documents; it answers 404 for anything else.
type Handler struct {
	cfg Config
	log *slog.Logger
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if len(cfg.MX) == 0 {
		cfg.MX = []string{cfg.Hostname}
	}
	h := &Handler{cfg: cfg, log: cfg.Log}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// Handles reports whether path is one of the handler's (the API listener
// routes these to it).
func Handles(path string) bool {
	switch strings.ToLower(path) {
	case MTASTSPath, AutoconfigPath, WellKnownAutoconfigPath, AutodiscoverPath:
		return true
	}
	return false
}

// ServeHTTP serves the documents.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch p := strings.ToLower(r.URL.Path); {
	case p == MTASTSPath && r.URL.Path == p:
		h.mtaSTS(w, r)
	case (p == AutoconfigPath || p == WellKnownAutoconfigPath) && r.URL.Path == p && h.cfg.Autoconfig:
		h.autoconfig(w, r)
	case p == AutodiscoverPath && h.cfg.Autoconfig: // Outlook capitalises it
		h.autodiscover(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Host returns the host name of a Host header, lower-case, without port
// and trailing dot; "" when it is not a valid host name.
func Host(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	d, err := smtp.NormalizeDomain(h)
	if err != nil || strings.HasPrefix(d, "[") {
		return ""
	}
	return d
}

// local returns d if it is a local domain, else "".
func (h *Handler) local(ctx context.Context, d string) string {
	if d == "" {
		return ""
	}
	ok, err := h.cfg.Dir.IsLocalDomain(ctx, d)
	if err != nil {
		h.log.Warn("well-known: local domain lookup", "domain", d, "err", err)
		return ""
	}
	if !ok {
		return ""
	}
	return d
}

func (h *Handler) mtaSTS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host := Host(r.Host)
	d, ok := strings.CutPrefix(host, "mta-sts.")
	if !ok || h.local(r.Context(), d) == "" {
		http.NotFound(w, r)
		return
	}
	body, err := h.Policy(r.Context(), d)
	if err != nil {
		h.log.Error("MTA-STS policy", "domain", d, "err", err)
		http.Error(w, "temporary failure", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "max-age=300")
	io.WriteString(w, body)
}

// Policy returns the MTA-STS policy of local domain d (RFC 8461 section
// 3.2): its mode from the store (testing when unset), the mx hosts and
// max_age, lines ending in CRLF.
func (h *Handler) Policy(ctx context.Context, d string) (string, error) {
	p, err := h.cfg.Dir.GetDomainPolicy(ctx, d)
	if err != nil {
		return "", err
	}
	mode := p.MTASTS
	switch mode {
	case "enforce", "testing", "none":
	default:
		mode = "testing"
	}
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, mx := range h.cfg.MX {
		b.WriteString("mx: " + mx + "\r\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(h.cfg.MaxAge/time.Second), 10) + "\r\n")
	return b.String(), nil
}

// autoconfig serves Thunderbird's config-v1.1.xml. The domain is the
// request's host (autoconfig.DOMAIN, or DOMAIN for the .well-known path),
// else the domain of the emailaddress parameter; it must be local. The
// address itself is never echoed: the user name is the %EMAILADDRESS%
// placeholder.
func (h *Handler) autoconfig(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host := Host(r.Host)
	d := h.local(r.Context(), strings.TrimPrefix(host, "autoconfig."))
	if d == "" {
		if a, err := smtp.ParseAddress(r.URL.Query().Get("emailaddress")); err == nil {
			d = h.local(r.Context(), a.Domain)
		}
	}
	if d == "" {
		http.NotFound(w, r)
		return
	}
	type server struct {
		Type           string `xml:"type,attr"`
		Hostname       string `xml:"hostname"`
		Port           int    `xml:"port"`
		SocketType     string `xml:"socketType"`
		Authentication string `xml:"authentication"`
		Username       string `xml:"username"`
	}
	type provider struct {
		ID           string   `xml:"id,attr"`
		Domain       string   `xml:"domain"`
		DisplayName  string   `xml:"displayName"`
		DisplayShort string   `xml:"displayShortName"`
		Incoming     []server `xml:"incomingServer"`
		Outgoing     []server `xml:"outgoingServer"`
	}
	doc := struct {
		XMLName  xml.Name `xml:"clientConfig"`
		Version  string   `xml:"version,attr"`
		Provider provider `xml:"emailProvider"`
	}{Version: "1.1", Provider: provider{ID: d, Domain: d, DisplayName: d, DisplayShort: d}}
	if i := h.cfg.IMAP; i.Port > 0 {
		sock := "STARTTLS"
		if i.Port == 993 {
			sock = "SSL"
		}
		doc.Provider.Incoming = append(doc.Provider.Incoming, server{"imap", i.Host, i.Port, sock, "password-cleartext", "%EMAILADDRESS%"})
	}
	if p := h.cfg.Submissions; p > 0 {
		doc.Provider.Outgoing = append(doc.Provider.Outgoing, server{"smtp", h.cfg.Hostname, p, "SSL", "password-cleartext", "%EMAILADDRESS%"})
	}
	if p := h.cfg.Submission; p > 0 {
		doc.Provider.Outgoing = append(doc.Provider.Outgoing, server{"smtp", h.cfg.Hostname, p, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"})
	}
	writeXML(w, "application/xml", doc)
}

// autodiscover answers Outlook's POX autodiscover request (the 2006a
// response schema) for an address of a local domain.
func (h *Handler) autodiscover(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var req struct {
		Email  string `xml:"Request>EMailAddress"`
		Schema string `xml:"Request>AcceptableResponseSchema"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAutodiscoverBody+1))
	if err != nil || len(body) > maxAutodiscoverBody {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	addr, err := smtp.ParseAddress(strings.TrimSpace(req.Email))
	if err != nil || h.local(r.Context(), addr.Domain) == "" {
		http.NotFound(w, r)
		return
	}
	type protocol struct {
		Type         string `xml:"Type"`
		Server       string `xml:"Server"`
		Port         int    `xml:"Port"`
		LoginName    string `xml:"LoginName"`
		SPA          string `xml:"SPA"`
		SSL          string `xml:"SSL"`
		Encryption   string `xml:"Encryption,omitempty"`
		AuthRequired string `xml:"AuthRequired"`
	}
	type response struct {
		XMLName xml.Name   `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Type    string     `xml:"Account>AccountType"`
		Action  string     `xml:"Account>Action"`
		Proto   []protocol `xml:"Account>Protocol"`
	}
	login := addr.String()
	resp := response{Type: "email", Action: "settings"}
	if i := h.cfg.IMAP; i.Port > 0 {
		p := protocol{Type: "IMAP", Server: i.Host, Port: i.Port, LoginName: login, SPA: "off", SSL: "on", AuthRequired: "on"}
		if i.Port != 993 {
			p.Encryption = "TLS"
		}
		resp.Proto = append(resp.Proto, p)
	}
	if p := h.cfg.Submissions; p > 0 {
		resp.Proto = append(resp.Proto, protocol{Type: "SMTP", Server: h.cfg.Hostname, Port: p, LoginName: login, SPA: "off", SSL: "on", AuthRequired: "on"})
	}
	if p := h.cfg.Submission; p > 0 {
		resp.Proto = append(resp.Proto, protocol{Type: "SMTP", Server: h.cfg.Hostname, Port: p, LoginName: login, SPA: "off", SSL: "on", Encryption: "TLS", AuthRequired: "on"})
	}
	writeXML(w, "application/xml", struct {
		XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
		Response response
	}{Response: resp})
}

func writeXML(w http.ResponseWriter, ctype string, v any) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, fmt.Sprintf("encoding: %v", err), http.StatusInternalServerError)
		return
	}
	b.WriteString("\n")
	w.Header().Set("Content-Type", ctype+"; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=300")
	w.Write(b.Bytes())
}
