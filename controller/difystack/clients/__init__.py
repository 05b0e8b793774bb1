"""HTTP clients of the servers difystack drives: Xinference, LocalAI and Dify's console API."""

from difystack.clients.dify import (
    AlreadySetUp,
    CredentialsRejected,
    DifyConsole,
    DifyNotSetUp,
    InitPasswordRejected,
    LoginFailed,
    LoginLocked,
    NotSupportedByVersion,
    PluginInstallFailed,
    PluginInstallTimeout,
)
from difystack.clients.http import CallJournal, HttpClient, HttpError, TransientHttpError
from difystack.clients.localai import JobStatus, LocalAIClient, LocalAIJobFailed, LocalAIJobTimeout
from difystack.clients.results import Completion, Embeddings, UnexpectedAnswer
from difystack.clients.xinference import (
    ModelLoading,
    XinferenceAdminExists,
    XinferenceClient,
    XinferenceLoginFailed,
    check_launchable,
)

__all__ = [
    "AlreadySetUp",
    "CallJournal",
    "Completion",
    "CredentialsRejected",
    "DifyConsole",
    "DifyNotSetUp",
    "Embeddings",
    "HttpClient",
    "HttpError",
    "InitPasswordRejected",
    "JobStatus",
    "LocalAIClient",
    "LocalAIJobFailed",
    "LocalAIJobTimeout",
    "LoginFailed",
    "LoginLocked",
    "ModelLoading",
    "NotSupportedByVersion",
    "PluginInstallFailed",
    "PluginInstallTimeout",
    "TransientHttpError",
    "UnexpectedAnswer",
    "XinferenceAdminExists",
    "XinferenceClient",
    "XinferenceLoginFailed",
    "check_launchable",
]
