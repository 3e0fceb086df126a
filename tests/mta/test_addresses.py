"""Email addresses (mta.addresses): the quick path against email_validator itself."""


def test_addresses_are_checked_exactly_as_email_validator_checks_them():
    """The quick path for plain addresses (normalise_address) answers what email_validator
    answers, on edge cases and on thousands of random addresses near its rules."""
    import random

    from mta.addresses import normalise_address, validated_address

    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    hosts = [
        "dest.example",
        "Dest.EXAMPLE",
        "x.co",
        "localhost",
        "x.test",
        "x.local",
        "x.invalid",
        "x.onion",
        "x.arpa",
        "home.arpa",
        "example",
        "x.c0m",
        "x.123",
        "-x.com",
        "x-.com",
        "x_y.com",
        "x..com",
        ".x.com",
        "x.com.",
        "xn--nxasmq6b.com",
        "βόλοσ.com",
        "[1.2.3.4]",
        "[IPv6:::1]",
        "123.45.67.89",
        "x.com ",
        "x .com",
        "münchen.de",
        "ＸＹＺ.com",
        "a" * 63 + ".com",
        "a" * 64 + ".com",
        ".".join(["b" * 63] * 4),
        ".".join(["c" * 60] * 4),
        "",
        "@x.com",
        "x.com@y.com",
        '"x".com',
        "x.com(comment)",
    ]
    locals_ = [
        "a",
        "A.b",
        "a..b",
        ".a",
        "a.",
        "a+tag",
        '"quoted"',
        '"a b"',
        "a b",
        "ü",
        "a\\b",
        "x" * 64,
        "x" * 65,
        "x" * 200,
        "(c)a",
        "a(c)",
        "",
        "postmaster",
        "a@b",
    ]
    cases = [f"{lp}@{h}" for lp in locals_ for h in hosts]
    cases += ["", "@", "a", "a@", " a@x.com ", "\ta@x.com", "a@x.com\n", "a@@x.com"]
    rng = random.Random(5322)

    def dot_atom(n):
        word = "".join(rng.choice(atext) for _ in range(n))
        return "".join(c if rng.random() > 0.1 else "." for c in word)

    def labels(n):
        return ".".join(
            "".join(rng.choice("abz09-") for _ in range(rng.randint(1, 63))) for _ in range(n)
        )

    for _ in range(3000):
        local = (
            dot_atom(rng.randint(1, 70))
            if rng.random() < 0.7
            else "".join(rng.choice(atext + '. "@\\ü') for _ in range(rng.randint(0, 70)))
        )
        host = rng.choice(hosts) if rng.random() < 0.4 else labels(rng.randint(1, 5))
        cases.append(f"{local}@{host}")
    for total in range(250, 259):  # the length limit, met by the local part and the domain
        for local_length in (1, 30, 64):
            host = labels(4)
            host = host[: total - local_length - 1 - 4] + ".com"
            cases.append(f"{'l' * local_length}@{host}")
            cases.append(f"{'l' * local_length}@{host.upper()}")
    for case in cases:
        assert normalise_address(case) == validated_address(case), case
