package dmarcreport

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// Limits bound the work done on one report. Zero fields take the value of
// DefaultLimits.
type Limits struct {
	// MaxMessageSize bounds the whole message read by ParseMessage.
	MaxMessageSize int64
	// MaxXMLSize bounds the XML document after decompression.
	MaxXMLSize int64
	// MaxRecords bounds the number of <record> elements.
	MaxRecords int
	// MaxZipEntries bounds the number of files in a zip archive.
	MaxZipEntries int
}

// DefaultLimits are the limits of the package-level functions.
var DefaultLimits = Limits{
	MaxMessageSize: 25 << 20,
	MaxXMLSize:     20 << 20,
	MaxRecords:     100_000,
	MaxZipEntries:  16,
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessageSize <= 0 {
		l.MaxMessageSize = DefaultLimits.MaxMessageSize
	}
	if l.MaxXMLSize <= 0 {
		l.MaxXMLSize = DefaultLimits.MaxXMLSize
	}
	if l.MaxRecords <= 0 {
		l.MaxRecords = DefaultLimits.MaxRecords
	}
	if l.MaxZipEntries <= 0 {
		l.MaxZipEntries = DefaultLimits.MaxZipEntries
	}
	return l
}

// ParseMessage reads a mail message (header and body) carrying an
// aggregate report, with DefaultLimits.
func ParseMessage(r io.Reader) (*Report, error) { return Limits{}.ParseMessage(r) }

// ParseAttachment parses the content of a report attachment, with
// DefaultLimits. See Limits.ParseAttachment.
func ParseAttachment(data []byte) (*Report, error) { return Limits{}.ParseAttachment(data) }

// ParseXML parses an aggregate report XML document, with DefaultLimits.
func ParseXML(r io.Reader) (*Report, error) { return Limits{}.ParseXML(r) }

// ParseMessage reads a mail message carrying an aggregate report: it walks
// the MIME tree and returns the first part that parses as a report (XML,
// gzip or zip, recognised by content, whatever the declared type). A
// message without one gives an error wrapping ErrNoReport (or the error of
// the last candidate that failed).
func (l Limits) ParseMessage(r io.Reader) (*Report, error) {
	l = l.withDefaults()
	lr := &limitReader{r: r, n: l.MaxMessageSize, what: "message"}
	ent, err := message.ReadWithOptions(lr, &message.ReadOptions{MaxHeaderBytes: 256 << 10})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		if errors.Is(err, ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("dmarcreport: reading message: %w", err)
	}
	var report *Report
	var lastErr error
	errFound := errors.New("found")
	werr := ent.Walk(func(_ []int, part *message.Entity, _ error) error {
		// A part error (unknown charset or transfer encoding) leaves the
		// body raw: it is still tried, the content decides.
		if part == nil || part.MultipartReader() != nil || !candidate(part) {
			return nil
		}
		data, err := io.ReadAll(part.Body)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			lastErr = fmt.Errorf("dmarcreport: reading part: %w", err)
			return nil
		}
		rep, err := l.ParseAttachment(data)
		if err != nil {
			lastErr = err
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return nil
		}
		report = rep
		return errFound
	})
	if report != nil {
		return report, nil
	}
	if lr.exceeded {
		return nil, fmt.Errorf("%w: message larger than %d bytes", ErrTooLarge, l.MaxMessageSize)
	}
	if werr != nil && !errors.Is(werr, errFound) {
		if errors.Is(werr, ErrTooLarge) {
			return nil, werr
		}
		return nil, fmt.Errorf("dmarcreport: reading message: %w", werr)
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoReport, lastErr)
	}
	return nil, ErrNoReport
}

// candidate reports whether a leaf part may hold a report: an XML, gzip,
// zip or octet-stream type, or a file name ending in .xml, .gz or .zip.
func candidate(part *message.Entity) bool {
	ct, ctParams, _ := part.Header.ContentType()
	switch ct {
	case "text/xml", "application/xml", "application/gzip", "application/x-gzip",
		"application/zip", "application/x-zip-compressed", "application/x-zip",
		"application/octet-stream", "application/x-gzip-compressed":
		return true
	}
	name := ctParams["name"]
	if _, dp, err := part.Header.ContentDisposition(); err == nil && dp["filename"] != "" {
		name = dp["filename"]
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".xml", ".gz", ".zip", ".gzip":
		return true
	}
	return false
}

// ParseAttachment parses an attachment's decoded content: an XML document,
// a gzip stream of one, or a zip archive holding one (the first *.xml
// entry, or the only entry). The format is recognised by content.
func (l Limits) ParseAttachment(data []byte) (*Report, error) {
	l = l.withDefaults()
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrInvalid, err)
		}
		defer zr.Close()
		return l.ParseXML(zr)
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		return l.parseZip(data)
	default:
		return l.ParseXML(bytes.NewReader(data))
	}
}

func (l Limits) parseZip(data []byte) (*Report, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: zip: %w", ErrInvalid, err)
	}
	if len(zr.File) > l.MaxZipEntries {
		return nil, fmt.Errorf("%w: zip has %d entries (max %d)", ErrTooLarge, len(zr.File), l.MaxZipEntries)
	}
	var f *zip.File
	for _, zf := range zr.File {
		if strings.HasSuffix(strings.ToLower(zf.Name), ".xml") {
			f = zf
			break
		}
	}
	if f == nil && len(zr.File) == 1 {
		f = zr.File[0]
	}
	if f == nil {
		return nil, fmt.Errorf("%w: zip holds no .xml file", ErrInvalid)
	}
	if f.UncompressedSize64 > uint64(l.MaxXMLSize) {
		return nil, fmt.Errorf("%w: zip entry %q declares %d bytes (max %d)", ErrTooLarge, f.Name, f.UncompressedSize64, l.MaxXMLSize)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %w", ErrInvalid, f.Name, err)
	}
	defer rc.Close()
	// The declared size can lie: ParseXML still counts what comes out.
	return l.ParseXML(rc)
}

// ParseXML parses an aggregate report document. It reads at most
// MaxXMLSize bytes (more is ErrTooLarge) and at most MaxRecords records.
// The root element must be <feedback>; unknown elements are ignored.
func (l Limits) ParseXML(r io.Reader) (*Report, error) {
	l = l.withDefaults()
	lr := &limitReader{r: r, n: l.MaxXMLSize, what: "XML document"}
	d := xml.NewDecoder(bufio.NewReader(lr))
	d.CharsetReader = charsetReader
	rep, err := l.decode(d)
	if err != nil {
		if errors.Is(err, ErrTooLarge) || lr.exceeded {
			return nil, fmt.Errorf("%w: XML document larger than %d bytes", ErrTooLarge, l.MaxXMLSize)
		}
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return rep, nil
}

func (l Limits) decode(d *xml.Decoder) (*Report, error) {
	root, err := nextStart(d)
	if err != nil {
		return nil, err
	}
	if root.Name.Local != "feedback" {
		return nil, fmt.Errorf("%w: root element <%s>, want <feedback>", ErrInvalid, root.Name.Local)
	}
	rep := &Report{}
	var haveMeta, havePolicy bool
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.EndElement:
			if !haveMeta || !havePolicy {
				return nil, fmt.Errorf("%w: missing report_metadata or policy_published", ErrInvalid)
			}
			if rep.ReportID == "" || rep.Policy.Domain == "" {
				return nil, fmt.Errorf("%w: missing report_id or policy domain", ErrInvalid)
			}
			return rep, nil
		case xml.StartElement:
			switch t.Name.Local {
			case "version":
				var v string
				if err := d.DecodeElement(&v, &t); err != nil {
					return nil, err
				}
				rep.Version = strings.TrimSpace(v)
			case "report_metadata":
				var m xmlMetadata
				if err := d.DecodeElement(&m, &t); err != nil {
					return nil, err
				}
				if err := m.fill(rep); err != nil {
					return nil, err
				}
				haveMeta = true
			case "policy_published":
				var p xmlPolicy
				if err := d.DecodeElement(&p, &t); err != nil {
					return nil, err
				}
				if err := p.fill(rep); err != nil {
					return nil, err
				}
				havePolicy = true
			case "record":
				if len(rep.Records) >= l.MaxRecords {
					return nil, fmt.Errorf("%w: more than %d records", ErrTooLarge, l.MaxRecords)
				}
				var x xmlRecord
				if err := d.DecodeElement(&x, &t); err != nil {
					return nil, err
				}
				rec, err := x.record()
				if err != nil {
					return nil, err
				}
				rep.Records = append(rep.Records, rec)
			default:
				if err := d.Skip(); err != nil {
					return nil, err
				}
			}
		}
	}
}

// nextStart returns the first start element, skipping the prolog.
func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			return s, nil
		}
	}
}

// charsetReader accepts the encodings reports are written in: UTF-8 and
// ASCII as they are, ISO-8859-1 converted to UTF-8.
func charsetReader(charset string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return in, nil
	case "iso-8859-1", "latin1", "iso8859-1", "windows-1252":
		return &latin1Reader{r: bufio.NewReader(in)}, nil
	}
	return nil, fmt.Errorf("unsupported XML encoding %q", charset)
}

// latin1Reader converts ISO-8859-1 bytes to UTF-8.
type latin1Reader struct {
	r   *bufio.Reader
	buf []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	for len(l.buf) == 0 {
		b, err := l.r.ReadByte()
		if err != nil {
			return 0, err
		}
		l.buf = utf8.AppendRune(l.buf[:0], rune(b))
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	return n, nil
}

// limitReader reads at most n bytes and fails with ErrTooLarge on more.
type limitReader struct {
	r        io.Reader
	n        int64
	what     string
	exceeded bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		l.exceeded = true
		return 0, fmt.Errorf("%w: %s", ErrTooLarge, l.what)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		l.exceeded = true
		return n - int(-l.n), fmt.Errorf("%w: %s", ErrTooLarge, l.what)
	}
	return n, err
}
