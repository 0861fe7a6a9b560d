#!/usr/bin/env python3
"""Writes N signed Komerce callback bodies, one "signature<TAB>body" per line, ~400 bytes each.
gen-bodies.py OUT N KEY [--dups]   (--dups: every body appears twice, so half are duplicates)
"""
import hashlib
import hmac
import sys

out, n, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
dups = "--dups" in sys.argv[4:]
prefix = sys.argv[sys.argv.index("--prefix") + 1] if "--prefix" in sys.argv else "BENCH"
with open(out, "w") as f:
    for i in range(n // 2 if dups else n):
        body = ('{"payment_id":"KOMPAY-%s-%08d","order_id":"ORDER-%08d","status":"PAID",'
                '"amount":%d,"payment_type":"bank_transfer","channel_code":"BCA",'
                '"va_number":"8808%012d","paid_at":"2026-08-12T10:15:30.000Z",'
                '"settlement_amount":%d,"customer":{"name":"Budi Santoso",'
                '"email":"budi.santoso@example.co.id","phone":"081234567890"},'
                '"items":[{"name":"Kaos Polos Hitam","quantity":2,"price":50000}],'
                '"note":"bench"}') % (prefix, i, i, 100000 + i, i, 100000 + i - 4000)
        sig = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
        line = "%s\t%s\n" % (sig, body)
        f.write(line)
        if dups:
            f.write(line)
