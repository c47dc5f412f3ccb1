"""How figures of a plan are written for people."""


def fmt_lr(lr: float) -> str:
    """Scientific, without padding: 3e-6, 1.5e-7, 2.38e-5, like seed 004's tables."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
