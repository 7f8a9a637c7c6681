"""graphopt's errors. Every error can name the op, the node, the types and the origin."""
from __future__ import annotations


class GraphOptError(Exception):
    """Base of all graphopt errors.

    ``where`` names the culprit (file, node name, op); ``context`` holds a few lines of IR around it.
    """

    def __init__(self, message: str, *, where: str | None = None, context: str | None = None) -> None:
        self.message = message
        self.where = where
        self.context = context
        super().__init__(self.__str__())

    def __str__(self) -> str:
        s = f"{self.where}: {self.message}" if self.where else self.message
        if self.context:
            s += "\n" + self.context
        return s

    def one_line(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ShapeError(GraphOptError):
    """An op was given inputs of types it cannot take (raised while building the node)."""


class UnknownOpError(GraphOptError):
    """An op name that is not in the registry."""


class VerifyError(GraphOptError):
    """The IR verifier found an inconsistent graph."""


class ParseError(GraphOptError):
    """The text form could not be parsed."""


class FrontendError(GraphOptError):
    """A model could not be lifted into the IR (bad file, bad node, missing data)."""


class ExportError(GraphOptError):
    """The IR could not be exported (an op without a mapping to the target format)."""


class CheckError(GraphOptError):
    """An optimized graph does not match its original on the numeric check."""


class PassError(GraphOptError):
    """A pass failed or produced an invalid graph."""
