"""Whether ``chmod`` can make a folder unwritable here (not for root, nor with CAP_DAC_OVERRIDE)."""
import os
import tempfile

import pytest


def chmod_blocks_writes() -> bool:
    with tempfile.TemporaryDirectory() as d:
        ro = os.path.join(d, "ro")
        os.mkdir(ro, 0o555)
        os.chmod(ro, 0o555)
        try:
            open(os.path.join(ro, "probe"), "w").close()
        except PermissionError:
            return True
        finally:
            os.chmod(ro, 0o755)
        return False


CHMOD_BLOCKS = chmod_blocks_writes()
#: for tests that make a folder read-only with chmod; the same cases run simulated everywhere
needs_chmod = pytest.mark.skipif(not CHMOD_BLOCKS, reason="chmod cannot block writes here (running as root)")


def deny_writes(monkeypatch, folder) -> None:
    """Make VidSeg's write probe of ``folder`` fail as a permission problem does (works for root too)."""
    from vidseg_core import output_dir

    real = output_dir._probe

    def probe(path):
        if os.path.abspath(path) == os.path.abspath(folder):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(output_dir, "_probe", probe)
