// Package testdns runs a real, authoritative-looking DNS server on loopback
// for tests: UDP and TCP on 127.0.0.1, records set by the test, NXDOMAIN for
// unknown names, NODATA for known names without the asked type, and
// SERVFAIL on demand.
package testdns

import (
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a DNS server on 127.0.0.1 answering from records set by the
// test. It is safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	servfail map[string]bool
	silent   map[string]bool
	soa      map[string]*dns.SOA // by zone
	queries  int
	ad       bool
}

// Start starts a server on 127.0.0.1 (one port, UDP and TCP) and stops it
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{records: map[string][]dns.RR{}, servfail: map[string]bool{}, silent: map[string]bool{},
		soa: map[string]*dns.SOA{}}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testdns: listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("testdns: listen tcp: %v", err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	go s.udp.ActivateAndServe() //nolint:errcheck // ends at Shutdown
	go s.tcp.ActivateAndServe() //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() {
		s.udp.Shutdown() //nolint:errcheck
		s.tcp.Shutdown() //nolint:errcheck
	})
	return s
}

// Addr returns the server's "127.0.0.1:port" (same port for UDP and TCP).
func (s *Server) Addr() string { return s.addr }

// Queries returns how many questions were answered so far.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

func key(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Add adds one record in zone-file syntax, e.g. "example.com. 300 IN MX 10
// mx.example.com.". A missing TTL defaults to 3600. It panics on a syntax
// error (tests pass literals).
func (s *Server) Add(rr string) {
	r, err := dns.NewRR(rr)
	if err != nil || r == nil {
		panic(fmt.Sprintf("testdns: bad record %q: %v", rr, err))
	}
	s.addRR(r)
}

func (s *Server) addRR(r dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(r.Header().Name)
	r.Header().Name = k
	s.records[k] = append(s.records[k], r)
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: key(name), Rrtype: t, Class: dns.ClassINET, Ttl: 300}
}

// AddMX adds an MX record for domain pointing to host with preference pref.
func (s *Server) AddMX(domain, host string, pref uint16) {
	s.addRR(&dns.MX{Hdr: hdr(domain, dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)})
}

// SetNullMX makes domain publish a null MX ("0 .", RFC 7505), replacing
// any MX it had.
func (s *Server) SetNullMX(domain string) {
	s.mu.Lock()
	k := key(domain)
	kept := s.records[k][:0]
	for _, r := range s.records[k] {
		if r.Header().Rrtype != dns.TypeMX {
			kept = append(kept, r)
		}
	}
	s.records[k] = kept
	s.mu.Unlock()
	s.addRR(&dns.MX{Hdr: hdr(domain, dns.TypeMX), Preference: 0, Mx: "."})
}

// AddA adds an A record; ip must be an IPv4 literal.
func (s *Server) AddA(host, ip string) {
	a := net.ParseIP(ip).To4()
	if a == nil {
		panic("testdns: not an IPv4 address: " + ip)
	}
	s.addRR(&dns.A{Hdr: hdr(host, dns.TypeA), A: a})
}

// AddAAAA adds an AAAA record; ip must be an IPv6 literal.
func (s *Server) AddAAAA(host, ip string) {
	a := net.ParseIP(ip)
	if a == nil || a.To4() != nil {
		panic("testdns: not an IPv6 address: " + ip)
	}
	s.addRR(&dns.AAAA{Hdr: hdr(host, dns.TypeAAAA), AAAA: a})
}

// AddTXT adds one TXT record made of the given strings. Strings longer
// than 255 bytes (a DKIM RSA key) are split as a zone file would.
func (s *Server) AddTXT(name string, txt ...string) {
	var parts []string
	for _, t := range txt {
		for len(t) > 255 {
			parts = append(parts, t[:255])
			t = t[255:]
		}
		parts = append(parts, t)
	}
	s.addRR(&dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: parts})
}

// AddPTR adds a PTR record for ip (an IPv4 or IPv6 literal) pointing to host.
func (s *Server) AddPTR(ip, host string) {
	rev, err := dns.ReverseAddr(ip)
	if err != nil {
		panic("testdns: bad PTR address " + ip)
	}
	s.addRR(&dns.PTR{Hdr: hdr(rev, dns.TypePTR), Ptr: dns.Fqdn(host)})
}

// AddCNAME makes name an alias of target.
func (s *Server) AddCNAME(name, target string) {
	s.addRR(&dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: key(target)})
}

// AddTLSA adds a TLSA record at name (e.g. "_25._tcp.mx.example.test")
// with the given usage, selector, matching type and association data.
func (s *Server) AddTLSA(name string, usage, selector, matchingType uint8, data []byte) {
	s.addRR(&dns.TLSA{
		Hdr:   hdr(name, dns.TypeTLSA),
		Usage: usage, Selector: selector, MatchingType: matchingType,
		Certificate: hex.EncodeToString(data),
	})
}

// SetAD makes every later answer (except SERVFAIL) carry the AD bit, as a
// DNSSEC-validating resolver does for signed zones, or stop doing so.
func (s *Server) SetAD(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ad = on
}

// SetServfail makes every question about name answer SERVFAIL.
func (s *Server) SetServfail(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail[key(name)] = true
}

// SetSilent makes the server drop every question about name or a name
// under it without answering, as an unreachable or overloaded server does:
// the client times out.
func (s *Server) SetSilent(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent[key(name)] = true
}

// SetSOA makes zone publish an SOA record with the given TTL and MINIMUM
// field (seconds); answers saying a name under zone does not exist
// (NXDOMAIN, NODATA) carry it in their authority section, which gives
// resolvers the negative-caching TTL (RFC 2308).
func (s *Server) SetSOA(zone string, ttl, minimum uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(zone)
	s.soa[k] = &dns.SOA{Hdr: dns.RR_Header{Name: k, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: "ns." + k, Mbox: "hostmaster." + k, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: minimum}
}

// Remove deletes every record and the SERVFAIL and silent marks of name.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, key(name))
	delete(s.servfail, key(name))
	delete(s.silent, key(name))
}

// underLocked returns the longest of the names in m that is name or a
// parent of it, or ""; callers hold s.mu.
func underLocked[V any](m map[string]V, name string) string {
	for n := name; ; {
		if _, ok := m[n]; ok {
			return n
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return ""
		}
		n = n[i+1:]
	}
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m) //nolint:errcheck // test server
		return
	}
	q := req.Question[0]
	s.mu.Lock()
	s.queries++
	if underLocked(s.silent, key(q.Name)) != "" {
		s.mu.Unlock()
		return // no answer: the client times out
	}
	m.Rcode, m.Answer = s.answer(key(q.Name), q.Qtype)
	if (m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0) && len(s.soa) > 0 {
		if z := underLocked(s.soa, key(q.Name)); z != "" {
			m.Ns = []dns.RR{dns.Copy(s.soa[z])}
		}
	}
	m.AuthenticatedData = s.ad && m.Rcode != dns.RcodeServerFailure
	s.mu.Unlock()
	size := 512
	if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, isTCP := w.RemoteAddr().(*net.TCPAddr); !isTCP {
		m.Truncate(size)
	}
	w.WriteMsg(m) //nolint:errcheck // test server
}

// answer computes the reply code and answer section; callers hold s.mu.
func (s *Server) answer(name string, qtype uint16) (int, []dns.RR) {
	var out []dns.RR
	for range 8 {
		if s.servfail[name] {
			return dns.RcodeServerFailure, nil
		}
		rrs, ok := s.records[name]
		if !ok {
			if len(out) > 0 {
				return dns.RcodeSuccess, out // dangling CNAME
			}
			return dns.RcodeNameError, nil
		}
		var cname string
		found := false
		for _, r := range rrs {
			switch t := r.Header().Rrtype; {
			case t == qtype || qtype == dns.TypeANY:
				out = append(out, dns.Copy(r))
				found = true
			case t == dns.TypeCNAME:
				cname = r.(*dns.CNAME).Target
			}
		}
		if found || cname == "" {
			return dns.RcodeSuccess, out
		}
		for _, r := range rrs {
			if r.Header().Rrtype == dns.TypeCNAME {
				out = append(out, dns.Copy(r))
			}
		}
		name = cname
	}
	return dns.RcodeSuccess, out
}
