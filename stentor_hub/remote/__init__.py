"""The files of ``remote_code/`` as a package, so that the library imports exactly the code
that travels to the Hub next to the weights (no copy to drift)."""

from .._resources import resource_dir

__path__ = [str(resource_dir("remote_code"))]
