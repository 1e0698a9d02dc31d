<#
.SYNOPSIS
Stops the Essedum executor's Windows service (gracefully) and removes it from NSSM. The data folder is kept.

    .\nssm\uninstall.ps1
#>
[CmdletBinding()]
param(
    [string]$ServiceName = "EssedumExecutor",
    [string]$Nssm = "nssm.exe"
)
$ErrorActionPreference = "Stop"

# nssm stop sends Ctrl+C and waits AppStopMethodConsole, so running jobs end as they would at a normal stop.
& $Nssm stop $ServiceName
& $Nssm remove $ServiceName confirm
if ($LASTEXITCODE -ne 0) { throw "nssm remove $ServiceName failed with exit code $LASTEXITCODE" }
Write-Host "removed $ServiceName"
