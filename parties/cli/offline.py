"""Commands that connect to nobody: `smpc check`, `smpc manifest`, `smpc protocols`, `smpc certs`.

    smpc check --consortium consortium.toml --as hospital-a --policy my-policy.toml
    smpc manifest consortium.toml
    smpc protocols
    smpc certs consortium.toml
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from parties.cli.common import EXIT_ERROR


def add(sub: Any) -> None:
    ch = sub.add_parser("check", help="check a party's settings and data locally; connect to "
                                      "nobody")
    ch.add_argument("--consortium", required=True, help="the consortium file")
    ch.add_argument("--as", dest="as_", metavar="NAME", required=True, help="which party")
    ch.add_argument("--policy", required=True, help="this organization's policy file")
    ch.set_defaults(func=cmd_check, where=lambda a: a.as_)

    mf = sub.add_parser("manifest", help="print what a consortium computes and reveals")
    mf.add_argument("consortium")
    mf.set_defaults(func=cmd_manifest, where=lambda a: "manifest")

    pr = sub.add_parser("protocols", help="list the registered protocols")
    pr.add_argument("name", nargs="?", help="show one protocol in detail")
    pr.set_defaults(func=cmd_protocols, where=lambda a: "protocols")

    ce = sub.add_parser("certs", help="create a development CA and node certificates")
    ce.add_argument("consortium")
    ce.add_argument("--out", help="folder (default: where the consortium's ca points)")
    ce.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    ce.add_argument("--per-node", action="store_true",
                    help="one folder per node with ca.pem and only that node's key")
    ce.set_defaults(func=cmd_certs, where=lambda a: "certs")


def cmd_check(args: argparse.Namespace) -> int:
    """Everything `smpc party` does before it connects, then a summary."""
    from parties.node import party

    prepared = party.prepare_party(args.consortium, args.as_, args.policy, tls=False)
    c = prepared.consortium
    print(f"consortium {c.name}: protocol {prepared.protocol.name} "
          f"v{prepared.protocol.version}, {len(c.parties)} parties")
    for input_name, table in prepared.loaded.items():
        if table is None:
            print(f"  input {input_name}: not provided by {args.as_}")
            continue
        cols = len(table.features[0]) if table.rows else table.features.shape[1]
        print(f"  input {input_name}: {table.path}: {table.rows} rows, {cols} encoded columns"
              + (", with identifiers" if table.identifiers is not None else ""))
        if table.ignored_columns:
            print(f"    ignoring columns not in the schema: {', '.join(table.ignored_columns)}")
    for input_name, own in prepared.states.items():
        if own.state:
            values = sum(t.numel() for t in own.state.values())
            print(f"  input {input_name}: {prepared.policy.data[input_name]}: "
                  f"{len(own.state)} tensors, {values} values, fit the class")
    print(f"manifest digest {prepared.digest}")
    if prepared.data_error is not None:
        print(f"error: {prepared.data_error}")
        return EXIT_ERROR
    if prepared.objection is not None:
        print(f"refused by the policy: {prepared.refusal or prepared.objection}")
        return EXIT_ERROR
    try:
        party.tls_identity(c, args.as_, prepared.policy.key if prepared.policy else None,
                           prepared.policy.cert if prepared.policy else None, insecure=False)
    except party.TlsSettingError as exc:
        print(f"TLS: {exc}")
        return EXIT_ERROR
    print(f"{args.as_} is ready: settings, policy, data and certificates check out")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """Print what a consortium file will compute and reveal to whom, and its digest."""
    from parties.consortium import manifest
    from parties.consortium.config import load_consortium

    c = load_consortium(args.consortium)
    protocol = manifest.resolve_protocol(c)
    m = manifest.build(c, protocol)
    print(f"consortium {c.name}: {len(c.parties)} parties + dealer at {c.dealer}")
    for p in c.parties:
        print(f"  party {p.name} at {p.address} ({', '.join(p.roles)})")
    code = m["code"]
    print(f"protocol {protocol.name} v{protocol.version}: {protocol.summary}")
    print(f"  code: {len(code['smpc'])} smpc files, {len(code['protocol'])} of the protocol's "
          f"own, crypten {code['crypten']}, torch {code['torch']}")
    params = m["protocol"]["parameters"]
    print("  parameters: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "none"))
    for input_name, table in m["inputs"].items():
        t = c.tables[table]
        print(f"  input {input_name}: table {table} ({len(t.encoded_columns)} encoded columns"
              + (f", label {t.label!r} with classes {list(t.classes)}" if t.label else "") + ")")
        if t.holders:
            held = ", ".join(f"{p} {len(cols)}" + (" + the label" if p == t.label_holder else "")
                             for p, cols in t.holders.items())
            print(f"    vertical: columns held by {held}; rows matched by a private set "
                  "intersection on each party's identifier column")
    print("revealed:")
    for r in c.reveal:
        budget = m["budget"].get(r.name)
        dp = (f" (differential privacy: epsilon {budget['epsilon']:g}, delta "
              f"{budget['delta']:g})" if budget else "")
        print(f"  {r.name} -> {', '.join(r.to)}{dp}")
    hidden = [o.name for o in protocol.outputs if o.name not in {r.name for r in c.reveal}]
    for name in hidden:
        print(f"  {name} -> nobody")
    if m.get("min_group_size", 1) > 1:
        print(f"  minimum group size {m['min_group_size']}: a statistic over fewer rows is "
              "suppressed (the count checked on shares)")
    print(f"manifest digest {manifest.digest(m)}")
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    """The registered protocols (built-in and installed), or one in detail."""
    from protocols import registry

    known = registry.available()
    names = [args.name] if args.name else sorted(known)
    for name in names:
        p = registry.load(name)
        print(f"{p.name} v{p.version} ({known[name]}): {p.summary}")
        if not args.name:
            continue
        for param in p.params:
            default = "required" if param.required else f"default {param.default!r}"
            print(f"  parameter {param.name}: {param.describe()}, {default}. {param.help}")
        for i in p.inputs:
            print(f"  input {i.name} ({'required' if i.required else 'optional'}, from every "
                  f"'{i.role}'): {i.help}")
        for o in p.outputs:
            dp = {"required": ", differential privacy: needs a budget",
                  "optional": ", differential privacy with a budget"}.get(o.dp, "")
            print(f"  output {o.name}{' (optional)' if o.optional else ''}{dp}: {o.help}")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Development CA + one key/certificate per party and the dealer (keys mode 0600)."""
    from parties.consortium import certs
    from parties.consortium.config import load_consortium

    c = load_consortium(args.consortium)
    out = Path(args.out) if args.out else (c.ca_path.parent if c.ca_path else None)
    if out is None:
        raise ValueError(f"{c.path}: no [consortium] ca to place the certificates; use --out")
    written = certs.generate(c.name, [*c.party_names, "dealer"], out, args.days, args.per_node)
    print(f"wrote {len(written)} files to {out}: ca.pem, and <name>.pem + <name>.key for "
          f"{', '.join([*c.party_names, 'dealer'])} (keys are mode 0600; do not commit them)")
    return 0
