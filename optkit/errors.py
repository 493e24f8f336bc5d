"""Errors meant for people: one line naming the problem and the fix, with an exit code.

Exit codes: 0 ok, 1 gate failed, 2 bad input (recipe, path, option), 3 a run error.
"""


class OptkitError(Exception):
    exit_code = 3


class BadInput(OptkitError):
    """The user gave something we cannot use (recipe, path, option)."""

    exit_code = 2


class RunError(OptkitError):
    """Something failed while working on valid input."""

    exit_code = 3


def quiet_libraries() -> None:
    """Silence import-time chatter (torchao's missing CUDA kernels on CPU, torch pytree notices) that
    users cannot act on; real warnings from optkit still print."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "transformers.tokenization_utils_base"):
        logging.getLogger(name).setLevel(logging.ERROR)
