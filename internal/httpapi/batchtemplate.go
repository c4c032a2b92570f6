package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// renderedParts are a personalization's subject, text and html rendered
// from the request's stored template with its merged data.
type renderedParts struct {
	subject, text, html string
}

// renderTemplates renders the request's stored template before the request
// is checked, so that the checks see the parts as they will be sent: into
// req itself for a single message, into each personalization (with its own
// data merged over the top level's) for a batch. The template's problems —
// every missing variable of every personalization, parts given twice — are
// added to ec with their field paths; only a failure to read the store is
// returned.
func (a *api) renderTemplates(ctx context.Context, account string, req *MessageRequest, ec *fieldErrors) error {
	if req.Personalizations == nil {
		return collect(ec, "", a.applyTemplate(ctx, account, req))
	}
	if req.TemplateID == "" {
		if err := collect(ec, "", a.applyTemplate(ctx, account, req)); err != nil {
			return err
		}
		for i, p := range req.Personalizations {
			if p.Data != nil {
				ec.add(fmt.Sprintf("personalizations[%d].data", i), "data is for templates: it needs template_id")
			}
		}
		return nil
	}
	// A batch may not multiply a template into more than MaxBatchBytes:
	// every rendered message is held until it is queued.
	var total int64
	for i := range req.Personalizations {
		p := &req.Personalizations[i]
		m := personalize(req, p)
		prefix := fmt.Sprintf("personalizations[%d].", i)
		if err := collect(ec, prefix, a.applyTemplate(ctx, account, m)); err != nil {
			return err
		}
		p.rendered = &renderedParts{subject: m.Subject, text: m.Text, html: m.HTML}
		total += int64(len(m.Subject) + len(m.Text) + len(m.HTML))
		if a.cfg.MaxBatchBytes > 0 && total > a.cfg.MaxBatchBytes {
			ec.add("personalizations", "the rendered messages are more than the %d bytes a batch may queue; split the batch", a.cfg.MaxBatchBytes)
			return nil
		}
	}
	return nil
}

// collect adds a template's validation problems to ec, the fields of a
// personalization's data under its prefix ("personalizations[3].data.name"),
// and returns any other error.
func collect(ec *fieldErrors, prefix string, err error) error {
	if err == nil {
		return nil
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		return err
	}
	list := ae.Errors
	if len(list) == 0 {
		list = []FieldError{{Field: ae.Field, Message: ae.Message}}
	}
	for _, e := range list {
		if prefix != "" && (e.Field == "data" || strings.HasPrefix(e.Field, "data.") || strings.HasPrefix(e.Field, "data[")) {
			e.Field = prefix + e.Field
		}
		ec.addErr(e)
	}
	return nil
}

// drop removes the problems of field (used for consequences of a problem
// already listed).
func (fe *fieldErrors) drop(field string) {
	kept := fe.list[:0]
	for _, e := range fe.list {
		if e.Field != field {
			kept = append(kept, e)
		}
	}
	fe.list = kept
}
