package dnscheck

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The mailboxes the published records ask reports to be sent to, under
// the mail domain (herald setup aliases them to the postmaster; Herald
// keeps the DMARC aggregate reports that arrive at any local address).
const (
	DMARCReportsLocal  = "dmarc-reports" // rua= of the DMARC record
	TLSRPTReportsLocal = "tls-reports"   // rua= of the TLS-RPT record
)

// RecordTTL is the TTL written on every suggested record: an hour, short
// enough to correct a mistake the same day.
const RecordTTL = 3600

// Record is one DNS record to publish, in zone-file terms.
type Record struct {
	Name    string // owner name, without the trailing dot
	Type    string // "MX", "A", "TXT", ...
	Data    string // RDATA in zone-file syntax (TXT strings quoted, split at 255 bytes)
	Comment string // what it is for, printed as a "; ..." line before it; "" for none
}

// String returns the record as one zone-file line:
// "example.com. 3600 IN MX 10 mail.example.com.".
func (r Record) String() string {
	return fmt.Sprintf("%s %d IN %s %s", fqdn(r.Name), RecordTTL, r.Type, r.Data)
}

// DKIMPublic is the public record of one DKIM key: its owner name
// ("SELECTOR._domainkey.DOMAIN") and TXT value ("v=DKIM1; k=...; p=..."),
// as msgauth/dkim.DNSRecord returns them.
type DKIMPublic struct {
	Name, Value string
}

// RecordOptions describe the server and domain the records are for.
type RecordOptions struct {
	Domain   string       // the mail domain
	Hostname string       // the server's public name (MX target, HELO name)
	IPs      []netip.Addr // the server's public addresses; empty: not known
	DKIM     []DKIMPublic // the domain's active DKIM keys
	// MTASTSID is the id= of the _mta-sts record; "" uses the time
	// (YYYYMMDDhhmmss, UTC) of Now.
	MTASTSID string
	Now      time.Time // for the default MTASTSID
}

// MTASTSID returns an MTA-STS policy id for a policy published at t: its
// UTC time as YYYYMMDDhhmmss (RFC 8461 §3.1: 1-32 letters and digits),
// so that a later change gets a larger id.
func MTASTSID(t time.Time) string { return t.UTC().Format("20060102150405") }

// Records returns every record a domain served by Herald should publish,
// in the order to publish them: receiving (MX, the hostname's A/AAAA),
// authentication (SPF of the domain and of the HELO name, DKIM, DMARC),
// transport security (MTA-STS, TLS-RPT), mail client configuration
// (autoconfig, autodiscover, RFC 6186/8314 SRV records) and, last, the
// PTR records to ask the provider of the addresses for. The DNS doctor
// suggests the same records in its fixes.
func Records(o RecordOptions) []Record {
	d, h := normName(o.Domain), normName(o.Hostname)
	id := o.MTASTSID
	if id == "" {
		id = MTASTSID(o.Now)
	}
	var rs []Record
	add := func(comment, name, typ, data string) {
		rs = append(rs, Record{Name: name, Type: typ, Data: data, Comment: comment})
	}
	add("Mail for "+d+" goes to this server.", d, "MX", "10 "+fqdn(h))
	for i, ip := range o.IPs {
		c := ""
		if i == 0 {
			c = "The server's addresses (what --ip said)."
		}
		add(c, h, addrType(ip), ip.String())
	}
	add("SPF: only this server sends mail as "+d+"; -all fails the rest.", d, "TXT", txtData(spfText(o.IPs, "mx")))
	add("SPF of the HELO name, for bounces and HELO checks.", h, "TXT", txtData(spfText(o.IPs, "a")))
	for i, k := range o.DKIM {
		c := ""
		if i == 0 {
			c = "DKIM: the public keys Herald signs with (both are active: every message carries an RSA and an Ed25519 signature)."
		}
		add(c, normName(k.Name), "TXT", txtData(k.Value))
	}
	add("DMARC: mail failing SPF and DKIM alignment goes to the junk folder; aggregate reports to "+
		DMARCReportsLocal+"@"+d+". If other services send as "+d+", start with p=none and read the reports first.",
		"_dmarc."+d, "TXT", txtData(DMARCRecord(d)))
	add("MTA-STS: Herald serves the policy at https://mta-sts."+d+"/.well-known/mta-sts.txt (mode testing first); "+
		"change the id whenever the policy changes.", "_mta-sts."+d, "TXT", txtData("v=STSv1; id="+id))
	add("", "mta-sts."+d, "CNAME", fqdn(h))
	add("TLS-RPT: senders report TLS failures to "+TLSRPTReportsLocal+"@"+d+".", "_smtp._tls."+d, "TXT", txtData(TLSRPTRecord(d)))
	add("Mail clients find their settings: Thunderbird autoconfig, Outlook autodiscover.", "autoconfig."+d, "CNAME", fqdn(h))
	add("", "autodiscover."+d, "CNAME", fqdn(h))
	add("RFC 6186/8314: submission with implicit TLS (465, preferred) and STARTTLS (587).", "_submissions._tcp."+d, "SRV", "0 1 465 "+fqdn(h))
	add("", "_submission._tcp."+d, "SRV", "10 1 587 "+fqdn(h))
	add("", "_autodiscover._tcp."+d, "SRV", "0 1 443 "+fqdn("autodiscover."+d))
	for i, ip := range o.IPs {
		c := ""
		if i == 0 {
			c = "Reverse DNS: not in your zone; ask the provider of each address to set its PTR to " + h + "."
		}
		rev, err := dns.ReverseAddr(ip.String())
		if err != nil {
			continue // not reached: ip is a valid address
		}
		add(c, strings.TrimSuffix(rev, "."), "PTR", fqdn(h))
	}
	return rs
}

// DMARCRecord is the DMARC record suggested for domain: p=quarantine with
// aggregate reports to dmarc-reports@domain.
func DMARCRecord(domain string) string {
	return "v=DMARC1; p=quarantine; rua=mailto:" + DMARCReportsLocal + "@" + domain
}

// TLSRPTRecord is the TLS-RPT record suggested for domain.
func TLSRPTRecord(domain string) string {
	return "v=TLSRPTv1; rua=mailto:" + TLSRPTReportsLocal + "@" + domain
}

func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "A"
	}
	return "AAAA"
}

// spfText is an SPF record authorising ips, or the mechanism fallback
// ("mx", "a") when no address is known.
func spfText(ips []netip.Addr, fallback string) string {
	terms := []string{"v=spf1"}
	for _, ip := range ips {
		if ip.Is4() {
			terms = append(terms, "ip4:"+ip.String())
		} else {
			terms = append(terms, "ip6:"+ip.String())
		}
	}
	if len(ips) == 0 {
		terms = append(terms, fallback)
	}
	return strings.Join(append(terms, "-all"), " ")
}

// txtData quotes text as TXT RDATA: strings of at most 255 bytes, with '"'
// and '\' escaped and other bytes outside printable ASCII as \DDD.
func txtData(text string) string {
	var b strings.Builder
	for first := true; first || len(text) > 0; first = false {
		n := min(len(text), 255)
		if !first {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		for i := 0; i < n; i++ {
			switch c := text[i]; {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20 || c > 0x7e:
				fmt.Fprintf(&b, "\\%03d", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
		text = text[n:]
	}
	return b.String()
}

// Zone writes records as zone-file text: each record on one line, its
// comment on "; " lines before it. Every line parses as a zone file.
func Zone(rs []Record) string {
	var b strings.Builder
	for _, r := range rs {
		if r.Comment != "" {
			b.WriteString("\n")
			for _, l := range strings.Split(r.Comment, "\n") {
				b.WriteString("; " + l + "\n")
			}
		}
		b.WriteString(r.String() + "\n")
	}
	return strings.TrimPrefix(b.String(), "\n")
}
