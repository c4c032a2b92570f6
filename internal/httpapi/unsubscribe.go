package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// This file is one-click unsubscribe in the API (issue 12): the
// List-Unsubscribe header fields of a JSON message (RFC 2369, RFC 8058)
// and the account's unsubscribe groups.

// UnsubscribeLinks makes the List-Unsubscribe header fields of a message
// to one recipient (unsubscribe.Links).
type UnsubscribeLinks interface {
	Headers(account, recipient, group, messageID string) (listUnsubscribe, listUnsubscribePost string, err error)
}

// Groups is the part of store.Unsubscribes the API uses.
type Groups interface {
	AddUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup, max int) error
	GetUnsubscribeGroup(ctx context.Context, account, id string) (store.UnsubscribeGroup, error)
	ListUnsubscribeGroups(ctx context.Context, account string) ([]store.UnsubscribeGroup, error)
	UpdateUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup) error
	DeleteUnsubscribeGroup(ctx context.Context, account, id string) error
	FindSuppressions(ctx context.Context, f store.SuppressionFilter) ([]store.Suppression, error)
	RemoveSuppression(ctx context.Context, account, address, group string) error
}

// Limits of unsubscribe groups.
const (
	maxGroupIDLen       = 64
	maxGroupNameLen     = 200
	maxGroupDescription = 1000
)

// msgOneRecipient refuses the link for a message with several recipients:
// one message carries one link, which would unsubscribe its recipient.
const msgOneRecipient = "a message with an unsubscribe link must have exactly one recipient (the link unsubscribes it); use personalizations: one recipient per message"

// listUnsubscribe adds the List-Unsubscribe and List-Unsubscribe-Post
// fields to a JSON message that asks for them (unsubscribe_group or
// list_unsubscribe) and sets the submission's queue ID (the link names
// it) and group (its suppressions are checked).
func (a *api) listUnsubscribe(ctx context.Context, account string, req *MessageRequest, sub *Submission) error {
	if req.UnsubscribeGroup == "" && !req.ListUnsubscribe {
		return nil
	}
	field := "list_unsubscribe"
	if req.UnsubscribeGroup != "" {
		field = "unsubscribe_group"
		if _, err := a.groups.GetUnsubscribeGroup(ctx, account, req.UnsubscribeGroup); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errInvalid(field, "no unsubscribe group %q in this account", req.UnsubscribeGroup)
			}
			return err
		}
	}
	if a.links == nil {
		return errInvalid(field, "one-click unsubscribe is not available on this server")
	}
	if len(sub.Recipients) != 1 {
		return errInvalid(field, "%s", msgOneRecipient)
	}
	for k := range req.Headers {
		if strings.EqualFold(k, "List-Unsubscribe") || strings.EqualFold(k, "List-Unsubscribe-Post") {
			return errInvalid("headers."+k, "Herald sets %s for unsubscribe_group and list_unsubscribe; do not set it as well", k)
		}
	}
	if sub.ID == "" {
		sub.ID = store.NewID()
	}
	lu, post, err := a.links.Headers(account, sub.Recipients[0], req.UnsubscribeGroup, sub.ID)
	if err != nil {
		return fmt.Errorf("unsubscribe link: %w", err)
	}
	sub.UnsubscribeGroup = req.UnsubscribeGroup
	sub.Raw = append([]byte("List-Unsubscribe: "+lu+"\r\nList-Unsubscribe-Post: "+post+"\r\n"), sub.Raw...)
	return nil
}

// validGroupID reports whether id is 1 to 64 of [a-z0-9_-].
func validGroupID(id string) bool {
	if id == "" || len(id) > maxGroupIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// groupView is an unsubscribe group.
type groupView struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Created     *time.Time `json:"created,omitempty"`
}

func toGroupView(g store.UnsubscribeGroup) groupView {
	return groupView{ID: g.ID, Name: g.Name, Description: g.Description, Created: ts(g.Created)}
}

type groupList struct {
	Groups []groupView `json:"unsubscribe_groups"`
}

type groupRequest struct {
	ID          string  `json:"id,omitempty"`
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// check validates the name and description given (create: the name is required).
func (req *groupRequest) check(create bool) error {
	if create && (req.Name == nil || strings.TrimSpace(*req.Name) == "") {
		return errInvalid("name", "a name is required")
	}
	if req.Name != nil {
		if strings.TrimSpace(*req.Name) == "" {
			return errInvalid("name", "the name may not be empty")
		}
		if err := checkText("name", *req.Name, maxGroupNameLen); err != nil {
			return err
		}
	}
	if req.Description != nil {
		if err := checkText("description", *req.Description, maxGroupDescription); err != nil {
			return err
		}
	}
	return nil
}

func (a *api) listGroups(w http.ResponseWriter, r *http.Request, c *caller) error {
	gs, err := a.groups.ListUnsubscribeGroups(r.Context(), c.account())
	if err != nil {
		return err
	}
	out := groupList{Groups: make([]groupView, 0, len(gs))}
	for _, g := range gs {
		out.Groups = append(out.Groups, toGroupView(g))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) addGroup(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req groupRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if req.ID == "" {
		req.ID = "grp_" + strings.ToLower(randomID(12))
	}
	if !validGroupID(req.ID) {
		return errInvalid("id", "an ID is 1 to %d of a-z, 0-9, - and _", maxGroupIDLen)
	}
	if err := req.check(true); err != nil {
		return err
	}
	g := store.UnsubscribeGroup{Account: c.account(), ID: req.ID, Name: *req.Name, Created: a.clock.Now()}
	if req.Description != nil {
		g.Description = *req.Description
	}
	if err := a.groups.AddUnsubscribeGroup(r.Context(), g, a.cfg.MaxUnsubscribeGroups); err != nil {
		switch {
		case errors.Is(err, store.ErrLimit):
			return &Error{Status: http.StatusConflict, Code: "limit_reached",
				Message: fmt.Sprintf("this account already has the maximum of %d unsubscribe groups; delete one first", a.cfg.MaxUnsubscribeGroups)}
		case errors.Is(err, store.ErrExists):
			return &Error{Status: http.StatusConflict, Code: "conflict", Field: "id", Message: "an unsubscribe group with this ID exists"}
		}
		return err
	}
	w.Header().Set("Location", "/v1/unsubscribe-groups/"+g.ID)
	writeJSON(w, http.StatusCreated, toGroupView(g))
	return nil
}

func (a *api) getGroup(w http.ResponseWriter, r *http.Request, c *caller) error {
	g, err := a.groups.GetUnsubscribeGroup(r.Context(), c.account(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such unsubscribe group")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toGroupView(g))
	return nil
}

func (a *api) patchGroup(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req groupRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if req.ID != "" {
		return errInvalid("id", "the ID of a group cannot change")
	}
	if err := req.check(false); err != nil {
		return err
	}
	g, err := a.groups.GetUnsubscribeGroup(r.Context(), c.account(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such unsubscribe group")
	}
	if err != nil {
		return err
	}
	if req.Name != nil {
		g.Name = *req.Name
	}
	if req.Description != nil {
		g.Description = *req.Description
	}
	if err := a.groups.UpdateUnsubscribeGroup(r.Context(), g); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such unsubscribe group")
		}
		return err
	}
	writeJSON(w, http.StatusOK, toGroupView(g))
	return nil
}

func (a *api) deleteGroup(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := a.groups.DeleteUnsubscribeGroup(r.Context(), c.account(), r.PathValue("id")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such unsubscribe group")
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// suppressionCursor is the next_cursor of a suppression page: the last
// row's address, followed by a space and its group when it has one (an
// address's domain never holds a space; a group ID neither).
func suppressionCursor(s store.Suppression) string {
	if s.Group == "" {
		return s.Address
	}
	return s.Address + " " + s.Group
}

// parseSuppressionCursor splits a cursor made by suppressionCursor.
func parseSuppressionCursor(c string) (address, group string) {
	at := strings.LastIndexByte(c, '@')
	if sp := strings.LastIndexByte(c, ' '); sp > at && at >= 0 {
		return c[:sp], c[sp+1:]
	}
	return c, ""
}
