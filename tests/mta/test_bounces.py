"""mta.bounces: DSNs, plain-text bounces and ARF complaints parsed from realistic samples."""

from __future__ import annotations

import base64
import random
import time

import pytest

from mta import bounces
from mta.bounces import RecipientStatus, Report, parse_report, verp_token

TOKEN = "0123456789abcdef0123456789abcdef"
VERP = f"b-{TOKEN}@sl.shop.example"


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sample(text: str, *, line_end: str = "\n") -> bytes:
    raw = text.replace("@VERP@", VERP).encode()
    return crlf(raw) if line_end == "\r\n" else raw


def only(report: Report | None) -> RecipientStatus:
    assert report is not None
    assert len(report.recipients) == 1
    return report.recipients[0]


# --- Postfix -----------------------------------------------------------------------------------

POSTFIX_HARD = """\
Return-Path: <>
Received: by mail.example.net (Postfix)
	id 4Q2bV61kTfz9sWx; Tue,  1 Apr 2025 14:30:09 +0200 (CEST)
Date: Tue,  1 Apr 2025 14:30:09 +0200 (CEST)
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: @VERP@
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4Q2bV61kTfz9sWx.1743510609/mail.example.net"
Content-Transfer-Encoding: 7bit
Message-Id: <20250401123009.4Q2bV61kTfz9sWx@mail.example.net>

This is a MIME-encapsulated message.

--4Q2bV61kTfz9sWx.1743510609/mail.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nobody@example.org>: host mx1.example.org[192.0.2.25] said: 550 5.1.1
    <nobody@example.org>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4Q2bV61kTfz9sWx.1743510609/mail.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net
X-Postfix-Queue-ID: 4Q2bV61kTfz9sWx
X-Postfix-Sender: rfc822; @VERP@
Arrival-Date: Tue,  1 Apr 2025 14:30:07 +0200 (CEST)

Final-Recipient: rfc822; nobody@example.org
Original-Recipient: rfc822;Nobody@Example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx1.example.org
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address
    rejected: User unknown in virtual mailbox table

--4Q2bV61kTfz9sWx.1743510609/mail.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822

Received: from worker1.shop.example (worker1.shop.example [198.51.100.7])
	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
	by mail.example.net (Postfix) with ESMTPS id 4Q2bV61kTfz9sWx
	for <nobody@example.org>; Tue,  1 Apr 2025 14:30:07 +0200 (CEST)
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.example; s=key1;
	h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
	b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==
From: Shop <orders@shop.example>
To: nobody@example.org
Subject: Your order 1001
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1001.a1b2c3@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Thanks for your order. Questions? Write to help@shop.example.

--4Q2bV61kTfz9sWx.1743510609/mail.example.net--
"""


def test_postfix_hard_bounce():
    report = parse_report(sample(POSTFIX_HARD, line_end="\r\n"))
    r = only(report)
    assert report.kind == "bounce"
    assert r.recipient == "nobody@example.org"  # Original-Recipient, lower-cased
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.1", 550)
    assert r.hard and not r.soft
    assert r.diagnostic == (
        "smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert r.remote_mta == "mx1.example.org"
    assert report.original_message_id == "<order-1001.a1b2c3@shop.example>"
    assert report.original_envelope_from == VERP  # from X-Postfix-Sender
    assert report.feedback_type is None and report.user_agent is None
    assert verp_token(report.original_envelope_from) == TOKEN


POSTFIX_DELAYED = """\
Return-Path: <>
Date: Tue,  1 Apr 2025 18:31:02 +0200 (CEST)
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: @VERP@
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4Q2cX03pLmz9sWy.1743525062/mail.example.net"
Message-Id: <20250401163102.4Q2cX03pLmz9sWy@mail.example.net>

This is a MIME-encapsulated message.

--4Q2cX03pLmz9sWy.1743525062/mail.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.net.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

                   The mail system

<slow@example.org>: connect to mx.example.org[192.0.2.30]:25: Connection timed
    out

--4Q2cX03pLmz9sWy.1743525062/mail.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net
X-Postfix-Queue-ID: 4Q2cX03pLmz9sWy
X-Postfix-Sender: rfc822; @VERP@
Arrival-Date: Tue,  1 Apr 2025 14:30:07 +0200 (CEST)

Final-Recipient: rfc822; slow@example.org
Original-Recipient: rfc822;slow@example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.30]:25:
    Connection timed out
Will-Retry-Until: Sun, 6 Apr 2025 14:30:07 +0200 (CEST)

--4Q2cX03pLmz9sWy.1743525062/mail.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <@VERP@>
From: Shop <orders@shop.example>
To: slow@example.org
Subject: Your order 1004
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1004.0f0f0f@shop.example>

--4Q2cX03pLmz9sWy.1743525062/mail.example.net--
"""


def test_postfix_delayed():
    report = parse_report(sample(POSTFIX_DELAYED))
    r = only(report)
    assert r.recipient == "slow@example.org"
    assert (r.action, r.status, r.smtp_code) == ("delayed", "4.4.1", None)
    assert r.soft and not r.hard
    assert "Connection timed out" in r.diagnostic
    assert r.remote_mta == "mail.example.net"  # no Remote-MTA: the Reporting-MTA
    assert report.original_message_id == "<order-1004.0f0f0f@shop.example>"
    assert report.original_envelope_from == VERP  # the returned headers' Return-Path


# --- Exim --------------------------------------------------------------------------------------

EXIM_PLAIN = """\
Return-path: <>
Envelope-to: @VERP@
Delivery-date: Tue, 01 Apr 2025 13:30:11 +0100
Received: from mail by mx.example.com with local (Exim 4.72)
	id 1Q2abc-0001Xy-Ab
	for @VERP@; Tue, 01 Apr 2025 13:30:11 +0100
X-Failed-Recipients: gone@example.com
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.com>
To: @VERP@
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1Q2abc-0001Xy-Ab@mx.example.com>
Date: Tue, 01 Apr 2025 13:30:11 +0100

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.com
    SMTP error from remote mail server after RCPT TO:<gone@example.com>:
    host mail.example.com [203.0.113.9]: 550 5.1.1 <gone@example.com>:
    Recipient address rejected: User unknown in local recipient table

------ This is a copy of the message, including all the headers. ------

Return-path: <@VERP@>
Received: from worker1.shop.example ([198.51.100.7])
	by mx.example.com with esmtps (TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256)
	(Exim 4.72)
	(envelope-from <@VERP@>)
	id 1Q2abb-0001Xw-9Z
	for gone@example.com; Tue, 01 Apr 2025 13:30:10 +0100
From: Shop <orders@shop.example>
To: gone@example.com
Subject: Your order 1002
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1002.d4e5f6@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Thanks for your order. Questions? Write to help@shop.example.
"""


def test_exim_plain_text_bounce():
    report = parse_report(sample(EXIM_PLAIN))
    r = only(report)
    assert report.kind == "bounce"
    assert r.recipient == "gone@example.com"
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.1", 550)
    assert r.hard and not r.soft
    assert "SMTP error from remote mail server after RCPT TO" in r.diagnostic
    assert "User unknown in local recipient table" in r.diagnostic
    assert r.remote_mta == "mail.example.com"
    assert report.original_message_id == "<order-1002.d4e5f6@shop.example>"
    assert report.original_envelope_from == VERP


# An older Exim, no X-Failed-Recipients, one line per address, one hard and one temporary error.
EXIM_PLAIN_OLD = """\
From: Mail Delivery System <MAILER-DAEMON@relay.example.com>
To: @VERP@
Subject: Mail delivery failed: returning message to sender
Date: Tue, 01 Apr 2025 13:30:11 +0100

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

<Ann@Example.com>: SMTP error from remote mail server after RCPT TO:<ann@example.com>: 550 5.1.1 \
<ann@example.com>... User unknown

<bo@example.net>: SMTP error from remote mail server after RCPT TO:<bo@example.net>: 452 4.2.2 \
Mailbox full, try again later

------ This is a copy of the message's headers. ------

From: Shop <orders@shop.example>
To: ann@example.com, bo@example.net, cy@example.org
Subject: Your order 1005
Message-ID: <order-1005.777@shop.example>
"""


def test_exim_plain_text_bounce_two_addresses():
    report = parse_report(sample(EXIM_PLAIN_OLD, line_end="\r\n"))
    assert report is not None
    ann, bo = report.recipients
    assert (ann.recipient, ann.action, ann.status, ann.smtp_code) == (
        "ann@example.com",
        "failed",
        "5.1.1",
        550,
    )
    assert ann.hard and "User unknown" in ann.diagnostic
    assert (bo.recipient, bo.action, bo.status, bo.smtp_code) == (
        "bo@example.net",
        "delayed",
        "4.2.2",
        452,
    )
    assert bo.soft and not bo.hard and "Mailbox full" in bo.diagnostic
    assert report.original_message_id == "<order-1005.777@shop.example>"
    assert report.original_envelope_from is None


EXIM_DSN = """\
Return-path: <>
Received: from mail by mx.example.com with local (Exim 4.96)
	id 1rsXyZ-000Abc-2Q
	for @VERP@;
	Tue, 01 Apr 2025 13:30:11 +0100
X-Failed-Recipients: gone@example.com
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.com>
To: @VERP@
References: <order-1006.abc@shop.example>
Content-Type: multipart/report; report-type=delivery-status; \
boundary=1743510611-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1rsXyZ-000Abc-2Q@mx.example.com>
Date: Tue, 01 Apr 2025 13:30:11 +0100

--1743510611-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.com
    host mail.example.com [203.0.113.9]
    SMTP error from remote mail server after RCPT TO:<gone@example.com>:
    550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown

--1743510611-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Action: failed
Final-Recipient: rfc822;gone@example.com
Status: 5.0.0
Remote-MTA: dns; mail.example.com
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown

--1743510611-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <@VERP@>
Received: from worker1.shop.example ([198.51.100.7])
	by mx.example.com with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384
	(Exim 4.96)
	(envelope-from <@VERP@>)
	id 1rsXyY-000Abb-1P
	for gone@example.com;
	Tue, 01 Apr 2025 13:30:10 +0100
From: Shop <orders@shop.example>
To: gone@example.com
Subject: Your order 1006
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1006.abc@shop.example>
Content-Type: text/plain; charset=utf-8

Thanks for your order.

--1743510611-eximdsn-1804289383--
"""


def test_exim_dsn():
    report = parse_report(sample(EXIM_DSN, line_end="\r\n"))
    r = only(report)
    assert r.recipient == "gone@example.com"
    # Exim's Status says only 5.0.0: the precise code comes from the diagnostic.
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.1", 550)
    assert r.hard
    assert r.diagnostic.startswith("smtp; 550 5.1.1 <gone@example.com>: Recipient address")
    assert r.remote_mta == "mail.example.com"
    assert report.original_message_id == "<order-1006.abc@shop.example>"
    assert report.original_envelope_from == VERP


# --- Microsoft Exchange / Office 365 -----------------------------------------------------------

EXCHANGE = """\
Received: from DM6PR11MB4321.namprd11.prod.outlook.com (2603:10b6:5:1d0::14)
 by DM6PR11MB4322.namprd11.prod.outlook.com with HTTPS; Tue, 1 Apr 2025 12:30:09 +0000
From: Microsoft Outlook
	<MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example>
To: <@VERP@>
Date: Tue, 1 Apr 2025 12:30:09 +0000
Content-Type: multipart/report; report-type=delivery-status;
	boundary="2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11@DM6PR11MB4321.namprd11.prod.outlook.com>
In-Reply-To: <order-1003.aa11bb@shop.example>
References: <order-1003.aa11bb@shop.example>
Subject: Undeliverable: Your order 1003
Auto-Submitted: auto-replied
MIME-Version: 1.0

--2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="b0c7f1c4-4a1d-4b59-8a52-6e8f0c3b2d77"

--b0c7f1c4-4a1d-4b59-8a52-6e8f0c3b2d77
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Delivery has failed to these recipients or groups:

Jane Doe (jane.doe@contoso.example)
The e-mail address you entered couldn't be found. Please check the recipien=
t's e-mail address and try to resend the message. If the problem continues,=
 please contact your helpdesk.

Diagnostic information for administrators:

Generating server: DM6PR11MB4321.namprd11.prod.outlook.com

jane.doe@contoso.example
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipien=
t not found by SMTP address lookup'

Original message headers:

Received: from mail.shop.example (198.51.100.7) by
 DM6PR11MB4321.namprd11.prod.outlook.com with Microsoft SMTP Server
 id 15.20.8583.22; Tue, 1 Apr 2025 12:30:07 +0000
From: Shop <orders@shop.example>
To: Jane Doe <jane.doe@contoso.example>
Subject: Your order 1003
Message-ID: <order-1003.aa11bb@shop.example>

--b0c7f1c4-4a1d-4b59-8a52-6e8f0c3b2d77
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><head></head><body><p><b><font color=3D"#000066">Delivery has failed =
to these recipients or groups:</font></b></p>
<p><a href=3D"mailto:jane.doe@contoso.example">Jane Doe (jane.doe@contoso.e=
xample)</a><br>The e-mail address you entered couldn't be found.</p></body>=
</html>

--b0c7f1c4-4a1d-4b59-8a52-6e8f0c3b2d77--

--2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR11MB4321.namprd11.prod.outlook.com
Received-From-MTA: dns;mail.shop.example
Arrival-Date: Tue, 1 Apr 2025 12:30:07 +0000

Original-Recipient: rfc822;jane.doe@contoso.example
Final-Recipient: rfc822;jane.doe@contoso.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP \
address lookup

--2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11
Content-Type: text/rfc822-headers

Received: from mail.shop.example (198.51.100.7) by
 DM6PR11MB4321.namprd11.prod.outlook.com with Microsoft SMTP Server
 id 15.20.8583.22; Tue, 1 Apr 2025 12:30:07 +0000
Return-Path: @VERP@
From: Shop <orders@shop.example>
To: Jane Doe <jane.doe@contoso.example>
Subject: Your order 1003
Date: Tue, 1 Apr 2025 12:30:05 +0000
Message-ID: <order-1003.aa11bb@shop.example>
MIME-Version: 1.0

--2a1e1f3c-5b0e-4e2e-9d4e-2f5d0b6f1a11--
"""


def test_exchange_office365_dsn():
    report = parse_report(sample(EXCHANGE, line_end="\r\n"))
    r = only(report)
    assert r.recipient == "jane.doe@contoso.example"
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.10", 550)
    assert r.hard and not r.soft
    assert "RESOLVER.ADR.RecipientNotFound" in r.diagnostic
    assert "Recipient not found by SMTP address lookup" in r.diagnostic
    assert r.remote_mta == "DM6PR11MB4321.namprd11.prod.outlook.com"
    assert report.original_message_id == "<order-1003.aa11bb@shop.example>"
    assert report.original_envelope_from == VERP


# --- Gmail -------------------------------------------------------------------------------------

GMAIL = """\
Delivered-To: @VERP@
Return-Path: <>
Received: by 2002:a05:6a10:9e0c:b0:5a1:2b3c:4d5e with SMTP id kz12csp123456pxb;
        Tue, 1 Apr 2025 05:30:13 -0700 (PDT)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: @VERP@
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <order-1007.beef@shop.example>
In-Reply-To: <order-1007.beef@shop.example>
X-Failed-Recipients: nobody.here@gmail.com
Message-ID: <67ebdc45.050a0220.3a2b1c.1234.GMR@mx.google.com>
Date: Tue, 01 Apr 2025 05:30:13 -0700 (PDT)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c30631b4d2e5"; report-type=delivery-status

--000000000000a1b2c30631b4d2e5
Content-Type: multipart/related; boundary="000000000000a1b2c40631b4d2e6"

--000000000000a1b2c40631b4d2e6
Content-Type: multipart/alternative; boundary="000000000000a1b2c50631b4d2e7"

--000000000000a1b2c50631b4d2e7
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to nobody.here@gmail.com because the address couldn't be found, \
or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist. Please try double-checking the \
recipient's email address for typos or unnecessary spaces. \
For more information, go to https://support.google.com/mail/?p=NoSuchUser

--000000000000a1b2c50631b4d2e7
Content-Type: text/html; charset="UTF-8"


<html>
<head>
<style>
* {
font-family:Roboto, "Helvetica Neue", Helvetica, Arial, sans-serif;
}
</style>
</head>
<body>
<table cellpadding="0" cellspacing="0" class="email-wrapper"><tr><td>
<h1>Address not found</h1>
<p>Your message wasn't delivered to <a style='color:#212121;text-decoration:none'>\
<b>nobody.here@gmail.com</b></a> because the address couldn't be found.</p>
</td></tr></table>
</body>
</html>

--000000000000a1b2c50631b4d2e7--
--000000000000a1b2c40631b4d2e6
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==
--000000000000a1b2c40631b4d2e6--
--000000000000a1b2c30631b4d2e5
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mail-sor-f41.google.com
Arrival-Date: Tue, 01 Apr 2025 05:30:12 -0700 (PDT)
X-Original-Message-ID: <order-1007.beef@shop.example>

Final-Recipient: rfc822; nobody.here@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2a00:1450:400c:c0b::1b, the server for the domain \
gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please \
try
 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. For more information, go to
 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser 5b1f17b1804b1-43d2a1b2c3dsi123456f8.200 \
- gsmtp
Last-Attempt-Date: Tue, 01 Apr 2025 05:30:13 -0700 (PDT)

--000000000000a1b2c30631b4d2e5
Content-Type: message/rfc822

DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.example; s=key1;
        h=from:to:subject:date:message-id;
        bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
        b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==
From: Shop <orders@shop.example>
To: nobody.here@gmail.com
Subject: Your order 1007
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1007.beef@shop.example>
Content-Type: text/plain; charset="UTF-8"

Thanks for your order.

--000000000000a1b2c30631b4d2e5--
"""


def test_gmail_dsn():
    report = parse_report(sample(GMAIL, line_end="\r\n"))
    r = only(report)
    assert r.recipient == "nobody.here@gmail.com"
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.1", 550)
    assert r.hard
    assert "The email account that you tried to reach does not exist" in r.diagnostic
    assert r.diagnostic.startswith("smtp; 550-5.1.1 ")
    assert r.remote_mta == "gmail-smtp-in.l.google.com"
    assert report.original_message_id == "<order-1007.beef@shop.example>"


def test_gmail_dsn_without_returned_message():
    no_original = GMAIL.split("--000000000000a1b2c30631b4d2e5\nContent-Type: message/rfc822")[0]
    report = parse_report(sample(no_original))  # X-Original-Message-ID
    assert report is not None and report.original_message_id == "<order-1007.beef@shop.example>"
    bare = no_original.replace("X-Original-Message-ID: <order-1007.beef@shop.example>\n", "")
    bare = bare.replace("In-Reply-To: <order-1007.beef@", "In-Reply-To: <irt@")
    report = parse_report(sample(bare))  # In-Reply-To, the last resort
    assert report is not None and report.original_message_id == "<irt@shop.example>"


# --- a DSN for two recipients, one failed and one delayed (sendmail) ---------------------------

SENDMAIL_TWO = """\
Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>
To: <@VERP@>
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)
Date: Tue, 1 Apr 2025 14:30:08 +0200
Message-Id: <202504011230.531CU8aQ012345@relay.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="531CU8aQ012345.1743510608/relay.example.org"

This is a MIME-encapsulated message

--531CU8aQ012345.1743510608/relay.example.org

The original message was received at Tue, 1 Apr 2025 14:30:07 +0200
from worker1.shop.example [198.51.100.7]

   ----- The following addresses had permanent fatal errors -----
<alice@example.org>
    (reason: 550 5.1.1 <alice@example.org>... User unknown)

   ----- The following addresses had transient non-fatal errors -----
<bob@example.org>
    (reason: 452 4.2.2 Mailbox full)

   ----- Transcript of session follows -----
... while talking to mx.example.org.:
>>> RCPT To:<alice@example.org>
<<< 550 5.1.1 <alice@example.org>... User unknown
>>> RCPT To:<bob@example.org>
<<< 452 4.2.2 <bob@example.org>... Mailbox full

--531CU8aQ012345.1743510608/relay.example.org
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
Received-From-MTA: DNS; worker1.shop.example
Arrival-Date: Tue, 1 Apr 2025 14:30:07 +0200

Final-Recipient: RFC822; alice@example.org
Action: failed
Status: 5.1.1
Remote-MTA: DNS; mx.example.org
Diagnostic-Code: SMTP; 550 5.1.1 <alice@example.org>... User unknown
Last-Attempt-Date: Tue, 1 Apr 2025 14:30:08 +0200

Final-Recipient: RFC822; bob@example.org
Action: delayed
Status: 4.2.2
Remote-MTA: DNS; mx.example.org
Diagnostic-Code: SMTP; 452 4.2.2 Mailbox full
Last-Attempt-Date: Tue, 1 Apr 2025 14:30:08 +0200
Will-Retry-Until: Sun, 6 Apr 2025 14:30:07 +0200

--531CU8aQ012345.1743510608/relay.example.org
Content-Type: text/rfc822-headers

Return-Path: <@VERP@>
Received: from worker1.shop.example (worker1.shop.example [198.51.100.7])
	by relay.example.org (8.17.1/8.17.1) with ESMTPS id 531CU7aQ012344;
	Tue, 1 Apr 2025 14:30:07 +0200
From: Shop <orders@shop.example>
To: alice@example.org, bob@example.org
Subject: Shipping update
Message-ID: <ship-2001.cafe@shop.example>

--531CU8aQ012345.1743510608/relay.example.org--
"""


def test_dsn_with_two_recipients():
    report = parse_report(sample(SENDMAIL_TWO))
    assert report is not None and report.kind == "bounce"
    alice, bob = report.recipients
    assert (alice.recipient, alice.action, alice.status, alice.smtp_code) == (
        "alice@example.org",
        "failed",
        "5.1.1",
        550,
    )
    assert alice.hard and not alice.soft and "User unknown" in alice.diagnostic
    assert (bob.recipient, bob.action, bob.status, bob.smtp_code) == (
        "bob@example.org",
        "delayed",
        "4.2.2",
        452,
    )
    assert bob.soft and not bob.hard and "Mailbox full" in bob.diagnostic
    assert alice.remote_mta == bob.remote_mta == "mx.example.org"
    assert report.original_message_id == "<ship-2001.cafe@shop.example>"
    assert report.original_envelope_from == VERP


def test_base64_delivery_status_part():
    raw = sample(SENDMAIL_TWO).decode()
    head, rest = raw.split("Content-Type: message/delivery-status\n\n")
    fields, tail = rest.split("--531CU8aQ012345", 1)
    encoded = base64.encodebytes(fields.encode()).decode()
    raw = (
        f"{head}Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        f"{encoded}\n--531CU8aQ012345{tail}"
    )
    report = parse_report(raw.encode())
    assert report is not None
    got = [(r.recipient, r.action, r.status, r.smtp_code) for r in report.recipients]
    assert got == [
        ("alice@example.org", "failed", "5.1.1", 550),
        ("bob@example.org", "delayed", "4.2.2", 452),
    ]


def test_field_blocks_from_raw_text():
    blocks = bounces._field_blocks(
        "Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822;\r\n"
        " <X@Example.com>\r\nAction: Failed\r\nStatus: 5.2.2 (mailbox full)\r\n\r\n"
    )
    assert blocks == [
        {"reporting-mta": ["dns; mx.example.com"]},
        {
            "final-recipient": ["rfc822; <X@Example.com>"],
            "action": ["Failed"],
            "status": ["5.2.2 (mailbox full)"],
        },
    ]
    r = bounces._dsn_recipient(blocks[1], "mx.example.com", "")
    assert (r.recipient, r.action, r.status, r.smtp_code, r.remote_mta) == (
        "x@example.com",
        "failed",
        "5.2.2",
        None,
        "mx.example.com",
    )
    assert r.soft and not r.hard  # a full mailbox is soft (X.2.2), not a dead address


def test_dsn_without_diagnostic_code_uses_the_human_text():
    raw = POSTFIX_HARD.replace(
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address\n"
        "    rejected: User unknown in virtual mailbox table\n",
        "",
    )
    r = only(parse_report(sample(raw)))
    assert (r.action, r.status, r.smtp_code) == ("failed", "5.1.1", 550)
    assert r.diagnostic.startswith("<nobody@example.org>: host mx1.example.org[192.0.2.25] said:")
    assert "(in reply to RCPT TO command)" in r.diagnostic


# --- plain-text bounces with nothing but a code and an address ---------------------------------

PLAIN_MINIMAL = """\
From: postmaster@mail.example.net
To: @VERP@
Subject: failure notice
Date: Tue, 1 Apr 2025 14:30:08 +0200

Hi. This is the mail delivery agent at mail.example.net.
I was not able to deliver your message to the following addresses.

<Someone@Example.net>:
550 5.1.1 mailbox unavailable

--- Below this line is a copy of the message.

From: Shop <orders@shop.example>
To: someone@example.net
Message-ID: <order-1008.ab@shop.example>
Subject: Your order 1008
"""


def test_plain_text_minimal_bounce():
    report = parse_report(sample(PLAIN_MINIMAL))
    r = only(report)
    assert (r.recipient, r.action, r.status, r.smtp_code) == (
        "someone@example.net",
        "failed",
        "5.1.1",
        550,
    )
    assert r.hard
    assert "mailbox unavailable" in r.diagnostic
    assert report.original_message_id == "<order-1008.ab@shop.example>"


def test_plain_text_temporary_bounce_is_delayed():
    raw = PLAIN_MINIMAL.replace("550 5.1.1 mailbox unavailable", "451 4.7.1 greylisted, come back")
    r = only(parse_report(sample(raw, line_end="\r\n")))
    assert (r.action, r.status, r.smtp_code) == ("delayed", "4.7.1", 451)
    assert r.soft and not r.hard


def test_plain_text_bounce_without_a_code_is_guessed_failed_but_not_hard():
    raw = PLAIN_MINIMAL.replace("550 5.1.1 mailbox unavailable", "Sorry, no mailbox here.")
    r = only(parse_report(sample(raw)))
    assert (r.recipient, r.action, r.status, r.smtp_code) == (
        "someone@example.net",
        "failed",
        None,
        None,
    )
    assert not r.hard and not r.soft


# --- ARF complaints ----------------------------------------------------------------------------

ARF_YAHOO = """\
Return-Path: <>
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: fbl@shop.example
Subject: FW: Your order 1009
Date: Tue, 1 Apr 2025 15:02:44 +0000
Message-ID: <fbl-2025040115024412345@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
	boundary="----=_Part_16813_1397543813.1743519764"

------=_Part_16813_1397543813.1743519764
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7 on \
Tue, 1 Apr 2025 12:30:07 +0000.
For more information about this format please see http://www.mipassoc.org/arf/.

------=_Part_16813_1397543813.1743519764
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 0.1
Original-Mail-From: <@VERP@>
Original-Rcpt-To: <Carol@yahoo.com>
Received-Date: Tue, 1 Apr 2025 12:30:07 +0000
Source-IP: 198.51.100.7
Reported-Domain: shop.example
Authentication-Results: mta1001.mail.ne1.yahoo.com  from=shop.example; domainkeys=neutral \
(no sig);  from=shop.example; dkim=pass (ok)
Reporting-MTA: dns; mta1001.mail.ne1.yahoo.com

------=_Part_16813_1397543813.1743519764
Content-Type: message/rfc822
Content-Disposition: inline

Received: from 198.51.100.7 (EHLO worker1.shop.example) (198.51.100.7)
  by mta1001.mail.ne1.yahoo.com with SMTP; Tue, 1 Apr 2025 12:30:07 +0000
Return-Path: <@VERP@>
From: Shop <orders@shop.example>
To: carol@yahoo.com
Subject: Your order 1009
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1009.fe@shop.example>
Content-Type: text/plain; charset=utf-8

Thanks for your order.

------=_Part_16813_1397543813.1743519764--
"""


def test_arf_abuse_report():
    report = parse_report(sample(ARF_YAHOO, line_end="\r\n"))
    r = only(report)
    assert report.kind == "complaint"
    assert report.feedback_type == "abuse"
    assert report.user_agent == "Yahoo!-Mail-Feedback/2.0"
    assert report.original_envelope_from == VERP
    assert report.original_message_id == "<order-1009.fe@shop.example>"
    assert r.recipient == "carol@yahoo.com"
    assert r.action == "delivered" and r.status is None and r.smtp_code is None
    assert not r.hard and not r.soft
    assert "email abuse report" in r.diagnostic
    assert r.remote_mta == "mta1001.mail.ne1.yahoo.com"


ARF_HEADERS_ONLY = """\
From: scomp@aol.net
To: fbl@shop.example
Subject: Email Feedback Report for IP 198.51.100.7
Date: Tue, 1 Apr 2025 16:11:20 -0400
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="boundary-1138-15497-2-6"

--boundary-1138-15497-2-6
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message from shop.example on \
Tue, 1 Apr 2025 12:30:07 +0000

--boundary-1138-15497-2-6
Content-Type: message/feedback-report

Feedback-Type: Abuse
User-Agent: AOL SComp
Version: 1
Original-Mail-From: @VERP@
Arrival-Date: Tue, 1 Apr 2025 12:30:07 +0000
Source-IP: 198.51.100.7
Reported-Domain: shop.example

--boundary-1138-15497-2-6
Content-Type: text/rfc822-headers

Return-Path: <@VERP@>
From: Shop <orders@shop.example>
To: Dave Example <Dave@aol.com>
Subject: Your order 1010
Date: Tue, 01 Apr 2025 12:30:05 +0000
Message-ID: <order-1010.dd@shop.example>

--boundary-1138-15497-2-6--
"""


def test_arf_with_rfc822_headers_only():
    report = parse_report(sample(ARF_HEADERS_ONLY))
    r = only(report)
    assert report.kind == "complaint"
    assert report.feedback_type == "abuse"
    assert report.user_agent == "AOL SComp"
    assert r.recipient == "dave@aol.com"  # no Original-Rcpt-To: the original's To
    assert report.original_message_id == "<order-1010.dd@shop.example>"
    assert report.original_envelope_from == VERP
    assert r.remote_mta is None


# --- not reports -------------------------------------------------------------------------------

OUT_OF_OFFICE = """\
Return-Path: <>
From: Jane Doe <jane.doe@contoso.example>
To: @VERP@
Subject: Automatic reply: Your order 1003
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: jane.doe@contoso.example
In-Reply-To: <order-1003.aa11bb@shop.example>
Date: Tue, 1 Apr 2025 12:30:09 +0000
Message-ID: <ooo-1.jd@contoso.example>
Content-Type: text/plain; charset="us-ascii"

I am out of the office until April 7 with no access to email. Your message
could not be delivered to me in person; for urgent matters contact
john.smith@contoso.example (error 550 is not my department).
"""

VACATION = """\
From: bob@example.org
To: @VERP@
Subject: Out of Office: Your order 1011
X-Autoreply: yes
Precedence: bulk
Content-Type: text/plain

Away until Monday.
"""

HUMAN = """\
From: Alice Customer <alice@customer.example>
To: Shop Support <support@shop.example>
Subject: Re: Your order 1012
Date: Tue, 1 Apr 2025 16:00:00 +0200
Message-ID: <CAFx1234abcd@mail.customer.example>
In-Reply-To: <order-1012.aa@shop.example>
Content-Type: text/plain; charset=utf-8

Hi,

when I try to email my colleague bob@customer.example about the order I get
"error 550 5.1.1 user unknown" and the message could not be delivered. Is
that on your side? Also a 452 4.2.2 once.

Thanks, Alice
"""

FORWARDED_BOUNCE = """\
From: Alice Customer <alice@customer.example>
To: @VERP@
Subject: Fwd: Undelivered Mail Returned to Sender
Content-Type: text/plain; charset=utf-8

What does this mean?

---------- Forwarded message ---------
<bob@customer.example>: host mx.customer.example[192.0.2.9] said: 550 5.1.1
    User unknown (in reply to RCPT TO command)
"""


@pytest.mark.parametrize(
    "text",
    [OUT_OF_OFFICE, VACATION, HUMAN, FORWARDED_BOUNCE],
    ids=["out-of-office", "vacation", "human-550", "forwarded"],
)
def test_ordinary_and_automatic_replies_are_not_reports(text):
    assert parse_report(sample(text)) is None
    assert parse_report(sample(text, line_end="\r\n")) is None


def test_mdn_read_receipt_is_not_a_report():
    raw = sample(
        """\
From: bob@example.org
To: @VERP@
Subject: Read: Your order 1013
Content-Type: multipart/report; report-type=disposition-notification; boundary="b"

--b
Content-Type: text/plain

Your message was displayed.

--b
Content-Type: message/disposition-notification

Final-Recipient: rfc822; bob@example.org
Disposition: manual-action/MDN-sent-manually; displayed

--b--
"""
    )
    assert parse_report(raw) is None


GARBAGE = [
    b"",
    b"\r\n\r\n",
    b"\x00" * 1000,
    bytes(range(256)) * 40,
    b"not a message at all",
    b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary here\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
    b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n!!!!\n--x",
    b"From: MAILER-DAEMON@x\nSubject: Undelivered Mail Returned to Sender\n"
    b"Content-Type: text/plain; charset=no-such-charset\nContent-Transfer-Encoding: base64\n\n"
    b"\xff\xfe===",
    b"Content-Type: =?utf-8?q?=ff?=\nSubject: =?bogus?x?=?=\nFrom: <<<@@@>>>\n\n",
    # cut right after the headers of a DSN
    sample(POSTFIX_HARD).split(b"\n\n")[0] + b"\n\n",
]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_not_a_report(raw):
    assert bounces._parse(raw) is None  # without the catch-all safety net
    assert parse_report(raw) is None


def test_truncated_and_mangled_reports_never_raise():
    rng = random.Random(5)
    for text in (POSTFIX_HARD, EXCHANGE, ARF_YAHOO, EXIM_PLAIN):
        raw = sample(text)
        for cut in range(0, len(raw), 157):
            result = bounces._parse(raw[:cut])  # must not raise
            assert result is None or isinstance(result, Report)
        for _ in range(20):
            mangled = bytearray(raw)
            for _ in range(30):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            result = bounces._parse(bytes(mangled))
            assert result is None or isinstance(result, Report)


def test_not_bytes():
    assert parse_report("From: x\n\nhello") is None  # type: ignore[arg-type]
    assert parse_report(None) is None  # type: ignore[arg-type]


def test_large_and_deep_messages_are_bounded():
    # A bounce returning a huge original: the DSN is read, the rest is cut.
    head, rest = sample(POSTFIX_HARD).split(b"Thanks for your order.", 1)
    huge = head + b"x" * 76 + (b"\n" + b"y" * 76) * 120_000 + rest
    start = time.monotonic()
    report = parse_report(huge)
    assert report is not None and report.recipients[0].status == "5.1.1"
    # Thousands of MIME parts, deep nesting, and text full of near-addresses stay quick.
    many = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nhi\n" * 20_000 + b"--b--\n"
    assert parse_report(many) is None
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(3000)
    )
    assert parse_report(deep) is None
    noisy = sample(PLAIN_MINIMAL).replace(
        b"I was not", b"a@" * 30_000 + b"<" * 30_000 + b"x@y" * 20_000 + b"I"
    )
    assert parse_report(noisy) is not None
    assert time.monotonic() - start < 10


# --- VERP --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "token"),
    [
        (VERP, TOKEN),
        (f"B-{TOKEN.upper()}@SL.Shop.Example", TOKEN),
        (f"<{VERP}>", TOKEN),
        (f"  {VERP}\r\n", TOKEN),
        (f"b-{TOKEN[:-1]}@sl.shop.example", None),  # 31 hex
        (f"b-{TOKEN}0@sl.shop.example", None),  # 33 hex
        (f"b-{TOKEN[:-1]}g@sl.shop.example", None),  # not hex
        (f"x-{TOKEN}@sl.shop.example", None),
        (f"bb-{TOKEN}@sl.shop.example", None),
        (f"b{TOKEN}@sl.shop.example", None),
        (f"b-{TOKEN}", None),  # no @
        (f"b-{TOKEN}@", None),
        (f"b-{TOKEN}@sl.shop.example@evil.example", None),
        ("", None),
    ],
)
def test_verp_token(address, token):
    assert verp_token(address) == token
