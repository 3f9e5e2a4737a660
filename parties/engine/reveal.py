"""TEMPORARY shim until the engine branch lands."""


def open_to(values, recipients):
    import crypten

    rank = crypten.communicator.get().get_rank()
    out = []
    for v, ranks in zip(values, recipients, strict=True):
        got = None
        for r in ranks:
            plain = v.get_plain_text(dst=r)
            if r == rank:
                got = plain
        out.append(got)
    return out
