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
    PluginTaskWait,
)
from difystack.clients.http import CallJournal, HttpClient, HttpError, TransientHttpError
from difystack.clients.localai import JobStatus, JobWait, LocalAIClient, LocalAIJobFailed
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
    "JobWait",
    "LocalAIClient",
    "LocalAIJobFailed",
    "LoginFailed",
    "LoginLocked",
    "ModelLoading",
    "NotSupportedByVersion",
    "PluginInstallFailed",
    "PluginTaskWait",
    "TransientHttpError",
    "UnexpectedAnswer",
    "XinferenceAdminExists",
    "XinferenceClient",
    "XinferenceLoginFailed",
    "check_launchable",
]
