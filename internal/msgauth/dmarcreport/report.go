// Package dmarcreport parses DMARC aggregate reports (RFC 7489 section 7.2
// and appendix C) as they arrive by mail: an XML document attached plain,
// gzip-compressed (.xml.gz) or zipped (.zip). Every size is bounded:
// the message, each attachment, the decompressed XML (zip and gzip bombs
// are refused) and the number of records.
package dmarcreport

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Errors returned by the parsers (wrapped; test with errors.Is).
var (
	// ErrNoReport means the message carries no attachment that parses as
	// an aggregate report.
	ErrNoReport = errors.New("dmarcreport: no aggregate report found")
	// ErrTooLarge means a size or count limit was exceeded.
	ErrTooLarge = errors.New("dmarcreport: limit exceeded")
	// ErrInvalid means the document is not a valid aggregate report.
	ErrInvalid = errors.New("dmarcreport: invalid report")
)

// Report is one DMARC aggregate report.
type Report struct {
	Version          string    // <version>, often empty (RFC 7489 reports have none)
	OrgName          string    // reporting organisation
	Email            string    // reporter contact address
	ExtraContactInfo string    // optional
	ReportID         string    // reporter's unique id
	Begin, End       time.Time // reporting period, UTC
	Errors           []string  // <error> elements of the metadata
	Policy           PolicyPublished
	Records          []Record
}

// PolicyPublished is the DMARC record the reporter saw for Domain.
type PolicyPublished struct {
	Domain string
	ADKIM  string // "r" or "s" ("" if absent)
	ASPF   string // "r" or "s" ("" if absent)
	P      string // none, quarantine, reject
	SP     string
	NP     string // DMARCbis non-existent subdomain policy, if reported
	Pct    int    // 100 when absent
	FO     string
}

// Record is one row of the report: Count messages from SourceIP with the
// same identifiers and results.
type Record struct {
	SourceIP    netip.Addr
	Count       int64
	Disposition string   // policy applied: none, quarantine, reject
	DKIM        string   // DMARC-aligned DKIM result: pass or fail
	SPF         string   // DMARC-aligned SPF result: pass or fail
	Reasons     []Reason // policy overrides (forwarded, mailing_list, ...)

	EnvelopeTo   string
	EnvelopeFrom string
	HeaderFrom   string

	DKIMResults []DKIMResult // raw DKIM results, one per signature
	SPFResults  []SPFResult  // raw SPF results
}

// Reason is a policy override reported for a record.
type Reason struct {
	Type    string // forwarded, sampled_out, trusted_forwarder, mailing_list, local_policy, other
	Comment string
}

// DKIMResult is one DKIM signature's raw result.
type DKIMResult struct {
	Domain      string
	Selector    string
	Result      string // none, pass, fail, policy, neutral, temperror, permerror
	HumanResult string
}

// SPFResult is one raw SPF result.
type SPFResult struct {
	Domain string
	Scope  string // helo or mfrom ("" if absent)
	Result string // none, neutral, pass, fail, softfail, temperror, permerror
}

// The XML shapes of RFC 7489 appendix C. Tags without a namespace match
// both the RFC 7489 documents (no namespace) and DMARCbis ones.
type xmlMetadata struct {
	OrgName          string `xml:"org_name"`
	Email            string `xml:"email"`
	ExtraContactInfo string `xml:"extra_contact_info"`
	ReportID         string `xml:"report_id"`
	DateRange        struct {
		Begin string `xml:"begin"`
		End   string `xml:"end"`
	} `xml:"date_range"`
	Errors []string `xml:"error"`
}

type xmlPolicy struct {
	Domain string `xml:"domain"`
	ADKIM  string `xml:"adkim"`
	ASPF   string `xml:"aspf"`
	P      string `xml:"p"`
	SP     string `xml:"sp"`
	NP     string `xml:"np"`
	Pct    string `xml:"pct"`
	FO     string `xml:"fo"`
}

type xmlRecord struct {
	Row struct {
		SourceIP        string `xml:"source_ip"`
		Count           string `xml:"count"`
		PolicyEvaluated struct {
			Disposition string `xml:"disposition"`
			DKIM        string `xml:"dkim"`
			SPF         string `xml:"spf"`
			Reasons     []struct {
				Type    string `xml:"type"`
				Comment string `xml:"comment"`
			} `xml:"reason"`
		} `xml:"policy_evaluated"`
	} `xml:"row"`
	Identifiers struct {
		EnvelopeTo   string `xml:"envelope_to"`
		EnvelopeFrom string `xml:"envelope_from"`
		HeaderFrom   string `xml:"header_from"`
	} `xml:"identifiers"`
	AuthResults struct {
		DKIM []struct {
			Domain      string `xml:"domain"`
			Selector    string `xml:"selector"`
			Result      string `xml:"result"`
			HumanResult string `xml:"human_result"`
		} `xml:"dkim"`
		SPF []struct {
			Domain string `xml:"domain"`
			Scope  string `xml:"scope"`
			Result string `xml:"result"`
		} `xml:"spf"`
	} `xml:"auth_results"`
}

func (m *xmlMetadata) fill(r *Report) error {
	r.OrgName = strings.TrimSpace(m.OrgName)
	r.Email = strings.TrimSpace(m.Email)
	r.ExtraContactInfo = strings.TrimSpace(m.ExtraContactInfo)
	r.ReportID = strings.TrimSpace(m.ReportID)
	r.Errors = m.Errors
	begin, err := epoch(m.DateRange.Begin)
	if err != nil {
		return fmt.Errorf("%w: date_range begin: %w", ErrInvalid, err)
	}
	end, err := epoch(m.DateRange.End)
	if err != nil {
		return fmt.Errorf("%w: date_range end: %w", ErrInvalid, err)
	}
	if end.Before(begin) {
		return fmt.Errorf("%w: date_range ends before it begins", ErrInvalid)
	}
	r.Begin, r.End = begin, end
	return nil
}

func (p *xmlPolicy) fill(r *Report) error {
	r.Policy = PolicyPublished{
		Domain: lower(p.Domain),
		ADKIM:  lower(p.ADKIM),
		ASPF:   lower(p.ASPF),
		P:      lower(p.P),
		SP:     lower(p.SP),
		NP:     lower(p.NP),
		FO:     strings.TrimSpace(p.FO),
		Pct:    100,
	}
	if s := strings.TrimSpace(p.Pct); s != "" {
		n, err := parseInt(s, 0, 100)
		if err != nil {
			return fmt.Errorf("%w: pct: %w", ErrInvalid, err)
		}
		r.Policy.Pct = int(n)
	}
	return nil
}

func (x *xmlRecord) record() (Record, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(x.Row.SourceIP))
	if err != nil {
		return Record{}, fmt.Errorf("%w: source_ip: %w", ErrInvalid, err)
	}
	count, err := parseInt(strings.TrimSpace(x.Row.Count), 0, 1<<53)
	if err != nil {
		return Record{}, fmt.Errorf("%w: count: %w", ErrInvalid, err)
	}
	pe := x.Row.PolicyEvaluated
	rec := Record{
		SourceIP:     ip.Unmap(),
		Count:        count,
		Disposition:  lower(pe.Disposition),
		DKIM:         lower(pe.DKIM),
		SPF:          lower(pe.SPF),
		EnvelopeTo:   lower(x.Identifiers.EnvelopeTo),
		EnvelopeFrom: lower(x.Identifiers.EnvelopeFrom),
		HeaderFrom:   lower(x.Identifiers.HeaderFrom),
	}
	for _, rs := range pe.Reasons {
		rec.Reasons = append(rec.Reasons, Reason{Type: lower(rs.Type), Comment: strings.TrimSpace(rs.Comment)})
	}
	for _, d := range x.AuthResults.DKIM {
		rec.DKIMResults = append(rec.DKIMResults, DKIMResult{
			Domain: lower(d.Domain), Selector: strings.TrimSpace(d.Selector),
			Result: lower(d.Result), HumanResult: strings.TrimSpace(d.HumanResult),
		})
	}
	for _, s := range x.AuthResults.SPF {
		rec.SPFResults = append(rec.SPFResults, SPFResult{Domain: lower(s.Domain), Scope: lower(s.Scope), Result: lower(s.Result)})
	}
	return rec, nil
}

func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// epoch parses seconds since the Unix epoch.
func epoch(s string) (time.Time, error) {
	n, err := parseInt(strings.TrimSpace(s), 0, 1<<40)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(n, 0).UTC(), nil
}

// parseInt parses a decimal integer in [lo, hi].
func parseInt(s string, lo, hi int64) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, fmt.Errorf("bad number %q", s)
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad number %q", s)
		}
		n = n*10 + int64(c-'0')
		if n > hi {
			return 0, fmt.Errorf("number %s out of range", s)
		}
	}
	if n < lo {
		return 0, fmt.Errorf("number %s out of range", s)
	}
	return n, nil
}
