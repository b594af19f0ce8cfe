"""The errors mp-deploy raises on purpose. Library code raises these; only a CLI's `main` turns them into exit
codes (mp_deploy.cli): a UserError is something the user gave (arguments, files, images) and exits 2, any other
MpDeployError is a failure of the work itself and exits 1. Imports nothing."""


class MpDeployError(Exception):
    """Base of every error raised on purpose; its message is one line that says what is wrong."""

    exit_code = 1


class UserError(MpDeployError):
    """Bad arguments, files or inputs from the user."""

    exit_code = 2


class UsageError(UserError, ValueError):
    """A command-line or API argument that cannot be used (unknown name, bad range, missing path)."""


class BuildError(MpDeployError):
    """An export step failed (a backend could not build or check an artifact)."""


class DataError(UserError):
    """A data file that cannot be used (unreadable, wrong size or layout, nothing valid in it); the message
    names the file and the cause."""


class ArtifactError(UserError, RuntimeError):
    """An artifact that is missing, corrupt, inconsistent with its sidecar, or built for another machine."""


class EngineError(UserError, RuntimeError):
    """Input an engine cannot take (shape, dtype, values)."""


class EngineFailure(MpDeployError, RuntimeError):
    """A run that failed inside the backend, or gave a non-finite output."""
