#!/usr/bin/python3
"""Parses a calendar feed with python3-icalendar (a real RFC 5545 parser)
and prints what it understood, one JSON array per line, for
tests/notify/feed_module_test.cc to compare with exact values:

  ["CAL", X-WR-CALNAME, METHOD, VERSION, CALSCALE, PRODID]
  ["TZ", TZID]                                   each VTIMEZONE
  ["EV", UID, STATUS, TZID, start UTC, end UTC, SEQUENCE, SUMMARY, LOCATION]
  ["DESC", UID, DESCRIPTION]                     when present

Times are resolved twice: by icalendar itself and through the feed's own
VTIMEZONE (Timezone.to_tz); a disagreement is an error. Also fails on a
line over 75 octets or a line not ended by CRLF.
"""
import json
import sys

import icalendar


def main(path):
    raw = open(path, 'rb').read()
    if not raw.endswith(b'\r\n'):
        sys.exit('document does not end with CRLF')
    for n, line in enumerate(raw.split(b'\r\n')[:-1]):
        if b'\n' in line or b'\r' in line:
            sys.exit('bare line break in line %d' % n)
        if len(line) > 75:
            sys.exit('line %d has %d octets' % (n, len(line)))
        line.decode('utf-8')  # every physical line is whole UTF-8
    cal = icalendar.Calendar.from_ical(raw)
    out = [['CAL', str(cal['X-WR-CALNAME']), str(cal['METHOD']), str(cal['VERSION']),
            str(cal['CALSCALE']), str(cal['PRODID'])]]
    zones = {}
    for tz in cal.walk('VTIMEZONE'):
        zones[str(tz['TZID'])] = tz.to_tz()
        out.append(['TZ', str(tz['TZID'])])
    for ev in cal.walk('VEVENT'):
        uid = str(ev['UID'])
        fields = []
        for prop in ('DTSTART', 'DTEND'):
            value = ev[prop]
            tzid = value.params.get('TZID', '')
            dt = ev.decoded(prop)
            utc = dt.astimezone(__import__('datetime').timezone.utc)
            if tzid:
                own = zones[tzid].localize(dt.replace(tzinfo=None)).astimezone(
                    __import__('datetime').timezone.utc)
                if own != utc:
                    sys.exit('%s %s: %s by name, %s by the VTIMEZONE' % (uid, prop, utc, own))
            fields.append((tzid, utc.strftime('%Y-%m-%dT%H:%M:%SZ')))
        if fields[0][0] != fields[1][0]:
            sys.exit('%s: DTSTART and DTEND in different zones' % uid)
        out.append(['EV', uid, str(ev['STATUS']), fields[0][0], fields[0][1], fields[1][1],
                    int(ev['SEQUENCE']), str(ev['SUMMARY']), str(ev.get('LOCATION', ''))])
        if 'DESCRIPTION' in ev:
            out.append(['DESC', uid, str(ev['DESCRIPTION'])])
    for row in out:
        print(json.dumps(row, ensure_ascii=False))


if __name__ == '__main__':
    main(sys.argv[1])
