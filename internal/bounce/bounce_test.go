package bounce

import (
	"testing"

	"github.com/heraldmail/herald/internal/smtp"
)

// The replies below are examples written in the style of real-world answers
// from the named providers and MTAs; they are illustrative, not captured
// verbatim.
func TestClassify(t *testing.T) {
	t.Parallel()
	type ec = smtp.EnhancedCode
	tests := []struct {
		name string
		code int
		enh  ec
		text string
		want string
	}{
		// Gmail (examples).
		{"gmail unknown", 550, ec{5, 1, 1}, "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces.", "hard:mailbox-unknown"},
		{"gmail disabled", 550, ec{5, 2, 1}, "The email account that you tried to reach is disabled.", "hard:mailbox-unknown"},
		{"gmail over quota perm", 552, ec{5, 2, 2}, "The email account that you tried to reach is over quota.", "soft:mailbox-full"},
		{"gmail over quota temp", 452, ec{4, 2, 2}, "The email account that you tried to reach is over quota.", "soft:mailbox-full"},
		{"gmail receiving too fast", 450, ec{4, 2, 1}, "The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.", "soft:rate-limited"},
		{"gmail size", 552, ec{5, 2, 3}, "Your message exceeded Google's message size limits.", "soft:message-too-large"},
		{"gmail spam", 550, ec{5, 7, 1}, "[192.0.2.1] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", "soft:spam-block"},
		{"gmail rate limited", 421, ec{4, 7, 28}, "[192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", "soft:rate-limited"},
		{"gmail dmarc", 550, ec{5, 7, 26}, "Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", "soft:auth-failure"},
		{"gmail unauthenticated", 550, ec{5, 7, 26}, "This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", "soft:auth-failure"},
		{"gmail temp auth", 421, ec{4, 7, 0}, "This message does not have authentication information or fails to pass authentication checks (SPF or DKIM).", "soft:auth-failure"},
		{"gmail virus", 552, ec{5, 7, 0}, "This message was blocked because its content presents a potential security issue.", "soft:content"},
		// Outlook / Exchange Online (examples).
		{"outlook not found", 550, ec{5, 1, 10}, "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "hard:mailbox-unknown"},
		{"hotmail mailbox unavailable", 550, ec{5, 5, 0}, "Requested action not taken: mailbox unavailable (S2017062302). [AM0PR01MB1234.eurprd01.prod.exchangelabs.com]", "hard:mailbox-unknown"},
		{"exchange DBEB", 550, ec{5, 4, 1}, "Recipient address rejected: Access denied. AS(201806281) [DB5EUR01FT012.eop-EUR01.prod.protection.outlook.com]", "hard:mailbox-unknown"},
		{"outlook block list", 550, ec{5, 7, 1}, "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", "soft:spam-block"},
		{"outlook banned ip", 550, ec{5, 7, 606}, "Access denied, banned sending IP [192.0.2.1].", "soft:spam-block"},
		{"outlook auth level", 550, ec{5, 7, 515}, "Access denied, sending domain example.com doesn't meet the required authentication level.", "soft:auth-failure"},
		{"outlook server busy", 451, ec{4, 7, 500}, "Server busy. Please try again later from [192.0.2.1]. (S77714)", "soft:rate-limited"},
		{"outlook ip reputation", 451, ec{4, 7, 650}, "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", "soft:rate-limited"},
		{"exchange relay", 550, ec{5, 7, 64}, "TenantAttribution; Relay Access Denied", "soft:relay-denied"},
		// Yahoo / AOL (examples).
		{"yahoo no account", 554, ec{}, "delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com", "hard:mailbox-unknown"},
		{"yahoo mailbox not found", 552, ec{}, "1 Requested mail action aborted, mailbox not found", "hard:mailbox-unknown"},
		{"aol disabled", 554, ec{}, "30 Sorry, your message to someone@aol.com cannot be delivered. This mailbox is disabled (554.30).", "hard:mailbox-unknown"},
		{"yahoo deferred", 421, ec{4, 7, 0}, "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", "soft:rate-limited"},
		{"yahoo spamhaus", 553, ec{5, 7, 1}, "[BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", "soft:spam-block"},
		{"yahoo policy 554", 554, ec{5, 7, 9}, "Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes", "soft:spam-block"},
		{"yahoo unauthenticated", 550, ec{5, 7, 9}, "This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", "soft:auth-failure"},
		// Postfix (examples).
		{"postfix user unknown", 550, ec{5, 1, 1}, "<nobody@example.org>: Recipient address rejected: User unknown in local recipient table", "hard:mailbox-unknown"},
		{"postfix relay", 554, ec{5, 7, 1}, "<someone@elsewhere.example>: Relay access denied", "soft:relay-denied"},
		{"postfix rbl", 554, ec{5, 7, 1}, "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "soft:spam-block"},
		{"postfix access", 550, ec{5, 7, 1}, "<someone@example.org>: Recipient address rejected: Access denied", "soft:policy"},
		{"postfix domain not found perm", 550, ec{5, 1, 2}, "Host or domain name not found. Name service error for name=nx.example type=MX: Host not found", "hard:domain-not-found"},
		{"postfix domain not found temp", 450, ec{4, 1, 2}, "<a@nx.example>: Recipient address rejected: Domain not found", "soft:domain-not-found"},
		{"postfix sender domain", 450, ec{4, 1, 8}, "<bounces@example.com>: Sender address rejected: Domain not found", "soft:policy"},
		{"postfix greylist", 450, ec{4, 2, 0}, "<a@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", "soft:other"},
		{"postfix unverified", 450, ec{4, 1, 1}, "<a@example.org>: Recipient address rejected: unverified address: host mx.example.org said: 550 5.1.1 User unknown", "soft:mailbox-unknown"},
		{"postfix dns temp", 451, ec{4, 4, 3}, "Host or domain name not found. Name service error for name=example.org type=MX: Host not found, try again", "soft:dns-failure"},
		{"postfix connection refused", 451, ec{4, 4, 1}, "connect to mx.example.org[192.0.2.2]:25: Connection refused", "soft:connection"},
		{"postfix lost connection", 451, ec{4, 4, 2}, "lost connection with mx.example.org[192.0.2.2] while sending end of data", "soft:connection"},
		{"postfix content", 550, ec{5, 6, 0}, "Message content rejected", "soft:content"},
		{"postfix too large", 552, ec{5, 3, 4}, "Message size exceeds fixed limit", "soft:message-too-large"},
		// Exim / cPanel (examples).
		{"exim no such user", 550, ec{}, "No Such User Here", "hard:mailbox-unknown"},
		{"exim unrouteable", 550, ec{}, "Unrouteable address", "hard:mailbox-unknown"},
		{"exim sender verify", 550, ec{}, "Verification failed for <bounces@example.com>\n550-Unrouteable address\n550 Sender verify failed", "soft:policy"},
		{"exim admin prohibition", 550, ec{}, "Administrative prohibition", "soft:policy"},
		{"exim black list", 550, ec{5, 7, 1}, "rejected because 192.0.2.1 is in a black list at zen.spamhaus.org", "soft:spam-block"},
		{"exim size", 552, ec{}, "Message size exceeds maximum permitted", "soft:message-too-large"},
		{"exim too many connections", 421, ec{}, "Too many concurrent SMTP connections; please try again later.", "soft:rate-limited"},
		{"exim quota", 552, ec{}, "Mailbox quota exceeded", "soft:mailbox-full"},
		// Codes only in the text (DSN Diagnostic-Code) and odd inputs.
		{"codes in text", 0, ec{}, "550-5.1.1 <a@example.org> User unknown\r\n550 5.1.1 more text", "hard:mailbox-unknown"},
		{"dsn status only", 0, ec{5, 1, 1}, "", "hard:mailbox-unknown"},
		{"dsn status 5.4.4", 0, ec{5, 4, 4}, "unable to route: domain not found", "hard:domain-not-found"},
		{"temp 4.4.4", 451, ec{4, 4, 4}, "cannot resolve mx.example.org", "soft:dns-failure"},
		{"bare 421", 421, ec{}, "Service not available, closing transmission channel", "soft:rate-limited"},
		{"nxdomain text", 550, ec{}, "NXDOMAIN for example.invalid", "hard:domain-not-found"},
		{"generic 550", 550, ec{5, 0, 0}, "Rejected", "soft:other"},
		{"generic policy 5.7.0", 550, ec{5, 7, 0}, "Rejected by local policy", "soft:policy"},
		{"empty", 0, ec{}, "", "soft:other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Classify(tt.code, tt.enh, tt.text).String()
			if got != tt.want {
				t.Errorf("Classify(%d, %v, %q) = %s, want %s", tt.code, tt.enh, tt.text, got, tt.want)
			}
		})
	}
}

func TestOnlyMailboxAndDomainAreHard(t *testing.T) {
	t.Parallel()
	// A permanent policy or spam block never suppresses, whatever the text.
	for _, c := range []struct {
		code int
		enh  smtp.EnhancedCode
		text string
	}{
		{554, smtp.EnhancedCode{5, 7, 1}, "blocked"},
		{550, smtp.EnhancedCode{5, 7, 26}, "DMARC"},
		{552, smtp.EnhancedCode{5, 2, 2}, "mailbox full"},
		{450, smtp.EnhancedCode{4, 1, 1}, "user unknown"}, // temporary: never hard
		{451, smtp.EnhancedCode{4, 1, 2}, "domain not found"},
	} {
		if cl := Classify(c.code, c.enh, c.text); cl.Hard {
			t.Errorf("Classify(%d, %v, %q) = %v, want soft", c.code, c.enh, c.text, cl)
		}
	}
}

func TestCodesFromText(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		code int
		enh  smtp.EnhancedCode
	}{
		{"550 5.1.1 x", 550, smtp.EnhancedCode{5, 1, 1}},
		{"550-5.7.26 x", 550, smtp.EnhancedCode{5, 7, 26}},
		{"4.2.2 x", 0, smtp.EnhancedCode{4, 2, 2}},
		{"554 30 x", 554, smtp.EnhancedCode{}},
		{"999 5.1.1", 0, smtp.EnhancedCode{5, 1, 1}},
		{"550 7.1.1", 550, smtp.EnhancedCode{}},
		{"550 5.1.1000", 550, smtp.EnhancedCode{}},
		{"hello", 0, smtp.EnhancedCode{}},
		{"", 0, smtp.EnhancedCode{}},
	} {
		code, enh := codesFromText(c.in)
		if code != c.code || enh != c.enh {
			t.Errorf("codesFromText(%q) = %d %v, want %d %v", c.in, code, enh, c.code, c.enh)
		}
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	if s := (Class{Hard: true, Category: CategoryMailboxUnknown}).String(); s != "hard:mailbox-unknown" {
		t.Errorf("got %q", s)
	}
	if s := (Class{Category: CategoryMailboxFull}).String(); s != "soft:mailbox-full" {
		t.Errorf("got %q", s)
	}
}
