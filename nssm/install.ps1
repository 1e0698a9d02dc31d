<#
.SYNOPSIS
Registers the Essedum job executor as a Windows service with NSSM (https://nssm.cc).

.DESCRIPTION
Runs the virtual environment's python on app.py in the install folder, with EXECUTOR_* settings
from -EnvFile (KEY=VALUE lines) plus the data folder; stdout and stderr go to rotating files in
<data>\logs; a stop sends Ctrl+C first and waits longer than the executor's shutdown bound;
the service restarts on failure and starts at boot. Run in an elevated PowerShell:

    .\nssm\install.ps1 -EnvFile C:\essedum\executor.env
#>
[CmdletBinding()]
param(
    [string]$ServiceName = "EssedumExecutor",
    [string]$InstallDir = (Split-Path -Parent $PSScriptRoot),
    [string]$Python = "",
    [string]$DataDir = (Join-Path $env:ProgramData "EssedumExecutor"),
    [string]$EnvFile = "",
    [string]$Nssm = "nssm.exe",
    # Must match EXECUTOR_SHUTDOWN_TIMEOUT (the executor's default is 30 s).
    [double]$ShutdownTimeout = 30,
    # Windows account to run as, e.g. "NT AUTHORITY\LocalService"; empty keeps LocalSystem.
    [string]$Account = ""
)
$ErrorActionPreference = "Stop"

if (-not $Python) { $Python = Join-Path $InstallDir ".venv\Scripts\python.exe" }
if (-not (Test-Path $Python)) { throw "no Python at ${Python}: create the virtual environment first (README)" }
if (-not (Test-Path (Join-Path $InstallDir "app.py"))) { throw "no app.py in $InstallDir" }

# Ctrl+C starts the executor's graceful stop: no new jobs, running ones get $ShutdownTimeout
# seconds, then it stops them and joins its threads (up to 15 s more). Wait for all of that.
$StopWaitMs = [int](($ShutdownTimeout + 30) * 1000)

function Invoke-Nssm {
    & $Nssm @args
    if ($LASTEXITCODE -ne 0) { throw "nssm $($args -join ' ') failed with exit code $LASTEXITCODE" }
}

$settings = @("EXECUTOR_DATA_DIR=$DataDir", "PYTHONUNBUFFERED=1")
if ($EnvFile) {
    foreach ($line in Get-Content $EnvFile) {
        $line = $line.Trim()
        if ($line -and -not $line.StartsWith("#")) {
            if ($line -notmatch '^EXECUTOR_[A-Z0-9_]+=') { throw "not an EXECUTOR_* setting: $line" }
            $settings += $line
        }
    }
}

$logs = Join-Path $DataDir "logs"
New-Item -ItemType Directory -Force -Path $logs | Out-Null

Invoke-Nssm install $ServiceName $Python app.py
Invoke-Nssm set $ServiceName AppDirectory $InstallDir
Invoke-Nssm set $ServiceName DisplayName "Essedum job executor"
Invoke-Nssm set $ServiceName Description "Runs Essedum pipelines locally or on Amazon SageMaker."
Invoke-Nssm set $ServiceName AppEnvironmentExtra @settings
Invoke-Nssm set $ServiceName Start SERVICE_AUTO_START
# stdout and stderr (start-up errors, tracebacks) to files that rotate at 10 MiB, also while running.
Invoke-Nssm set $ServiceName AppStdout (Join-Path $logs "service-stdout.log")
Invoke-Nssm set $ServiceName AppStderr (Join-Path $logs "service-stderr.log")
Invoke-Nssm set $ServiceName AppRotateFiles 1
Invoke-Nssm set $ServiceName AppRotateOnline 1
Invoke-Nssm set $ServiceName AppRotateBytes 10485760
# Graceful stop: Ctrl+C first and wait; WM_CLOSE and thread exit are no use to a console program.
Invoke-Nssm set $ServiceName AppStopMethodSkip 6
Invoke-Nssm set $ServiceName AppStopMethodConsole $StopWaitMs
Invoke-Nssm set $ServiceName AppKillProcessTree 1
# Restart on failure, after 5 s; a run shorter than 10 s counts as failing to start (NSSM throttles).
Invoke-Nssm set $ServiceName AppExit Default Restart
Invoke-Nssm set $ServiceName AppExit 0 Exit
Invoke-Nssm set $ServiceName AppRestartDelay 5000
Invoke-Nssm set $ServiceName AppThrottle 10000
if ($Account) { Invoke-Nssm set $ServiceName ObjectName $Account }

Invoke-Nssm start $ServiceName
Write-Host "installed $ServiceName; logs in $logs (executor.log, service-stdout.log, service-stderr.log)"
