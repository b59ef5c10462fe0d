"""Tools for checking layers: :func:`gradcheck` compares a layer's
hand-derived backward with central finite differences."""

from .gradcheck import GradcheckError, gradcheck

__all__ = ["gradcheck", "GradcheckError"]
