"""The ``alexnet`` click group, on which each command module registers its commands."""

from __future__ import annotations

import signal

import click

from ..errors import AlexNetError
from ..files import storage_error


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AlexNetError as error:
            raise _OneLine(str(error)) from None
        except OSError as error:  # the machine refused (a full disk, a read-only folder, ...): where and what to do
            raise _OneLine(str(storage_error(error, doing=None))) from None
        except click.UsageError as error:
            # click's usage errors span four lines; one is enough, with where to look.
            where = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
            raise _OneLine(error.format_message() + where) from None
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: the shell's code for it
            click.echo("stopped (Ctrl-C)", err=True)
            raise SystemExit(128 + signal.SIGINT) from None


class _OneLine(click.ClickException):
    exit_code = 2


def exit_stopped(stopped, code: int, speak: bool = True) -> None:
    """Exit with ``code`` after a stop that saved (``alexnet.train.loop.Interrupted``), saying
    so. The process is leaving: a repeated SIGTERM (torchrun sends its own again when another
    rank has exited) must not end it by the signal's default, as -15, before it does."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if speak:
        click.echo(str(stopped), err=True)
    raise SystemExit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="alexnet")
def main():
    """AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as the paper describes it:
    two towers on two devices, LRN, overlapping pooling, the paper's data pipeline and
    training recipe.

    \b
    --devices picks where a command runs, and the layout follows:
      auto      towers on cuda:0,cuda:1 with two GPUs, else grouped on one device
      0,1       towers on two GPUs          cpu,cpu   towers, both on the CPU
      0 | cpu   grouped (groups=2) on one   0,cpu     towers on a GPU and the CPU
    """
