"""BitFit (Ben Zaken et al., 2021): fine-tune only the bias terms, plus the head.

A complete ftkit strategy plugin, small enough to copy. A strategy returns a
plan; it never touches torch, so ``ftkit strategies`` stays fast.
"""

import ftkit


def build(anatomy, req):
    head = anatomy.params_of(anatomy.head)
    biases = [p for p in anatomy.params_of(anatomy.backbone) if p.endswith(".bias")]
    return ftkit.single_stage(
        "bitfit",
        req.epochs,
        ftkit.group("biases", biases, req.lr * req.options["bias_lr_mult"]),
        ftkit.group("head", head, req.lr),
    )


@ftkit.hookimpl
def ftkit_register_strategies(register):
    register(
        ftkit.Strategy(
            name="bitfit",
            description="BitFit: train only the backbone's bias terms and the head.",
            build=build,
            options=(
                ftkit.Option(
                    "bias_lr_mult",
                    float,
                    1.0,
                    "LR multiplier for the biases",
                    lambda v: None if v > 0 else "must be > 0",
                ),
            ),
        )
    )
