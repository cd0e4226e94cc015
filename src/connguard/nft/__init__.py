"""The nftables backend: JSON rendering, the atomic applier, and kernel read-back."""

from connguard.nft.applier import Applier, ApplyResult
from connguard.nft.executor import Executor, FakeExecutor, NftCli, NftFailure
from connguard.nft.libnft import NftLib, make_executor
from connguard.nft.observe import KernelBan, Observation, observe

__all__ = ["Applier", "ApplyResult", "Executor", "FakeExecutor", "KernelBan", "NftCli", "NftFailure",
           "NftLib", "Observation", "make_executor", "observe"]
