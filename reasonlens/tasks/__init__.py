"""Task generators: each returns tokens, a loss mask and ground-truth intermediate states."""

from reasonlens.tasks import addition, matching, multiplication, polynomial, scratch
from reasonlens.tasks.batch import Batch

__all__ = ["Batch", "addition", "matching", "multiplication", "polynomial", "scratch"]
