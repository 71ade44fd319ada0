"""Errors a user can fix: ``jaxgen.main`` prints them as one line and exits non-zero."""


class UserError(Exception):
  """Bad input (config, data set name, workdir, ...): the message names the problem and the fix."""


class NonFiniteLossError(UserError):
  """Training produced a NaN or inf loss; nothing after the last good checkpoint is saved."""
