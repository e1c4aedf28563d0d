"""corednsprobe: asks CoreDNS real DNS questions over UDP and restarts the pods that fail."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corednsprobe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
