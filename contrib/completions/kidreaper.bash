# bash completion for kidreaper(8)                                  -*- shell-script -*-
# Installed as $datadir/bash-completion/completions/kidreaper.

_kidreaper()
{
    local cur prev words cword split
    _init_completion -s || return

    local global_opts='-h --help --version -v --verbose'
    local check_opts='-h --help -v --verbose --fault-source'
    local diagnose_opts='-h --help -v --verbose --pid --pidfile --cgroup --unit
        --duration --interval --format --limit --workers --fault-source --demo'
    local reap_opts='-h --help -v --verbose --pid --pidfile --cgroup --unit --limit
        --metric --server --workers --signal --stagger --max-concurrent --min-children
        --grace --escalate --jitter --interval --idle-timeout --no-idle-wait
        --replace-timeout --truth-every --pre-hook --post-hook --hook-timeout --dry-run
        --once --wait-for-manager --log-format --fault-source --config --check-config
        --metrics-listen'

    # The subcommand: the first word after the command that is not an option.
    local i subcommand=''
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            check | diagnose | reap)
                subcommand=${words[i]}
                break
                ;;
        esac
    done

    # The value of an option.
    case $prev in
        --fault-source)
            COMPREPLY=($(compgen -W 'auto tracepoints mm' -- "$cur"))
            return
            ;;
        --format)
            COMPREPLY=($(compgen -W 'table json' -- "$cur"))
            return
            ;;
        --log-format)
            COMPREPLY=($(compgen -W 'text json' -- "$cur"))
            return
            ;;
        --metric)
            COMPREPLY=($(compgen -W 'private pss rss anon' -- "$cur"))
            return
            ;;
        --server)
            COMPREPLY=($(compgen -W 'fcgi httpd-prefork gunicorn uwsgi php-fpm unicorn
                puma starman' -- "$cur"))
            return
            ;;
        --workers)
            COMPREPLY=($(compgen -W 'exe listener exe,listener any comm= cmdline=' \
                -- "$cur"))
            [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
            return
            ;;
        --signal)
            COMPREPLY=($(compgen -W 'HUP INT QUIT TERM USR1 USR2 WINCH KILL' -- "$cur"))
            return
            ;;
        --pid)
            _pids
            return
            ;;
        --pidfile | --config)
            _filedir
            return
            ;;
        --pre-hook | --post-hook)
            # A shell command: a program, or a script by its path.
            if [[ $cur == */* ]]; then
                _filedir
            else
                COMPREPLY=($(compgen -c -- "$cur"))
            fi
            return
            ;;
        --cgroup)
            _filedir -d
            return
            ;;
        --unit)
            local units
            units=$(systemctl list-units --all --full --no-legend --plain \
                --type=service,scope 2>/dev/null | awk '{ print $1 }')
            COMPREPLY=($(compgen -W "$units" -- "$cur"))
            return
            ;;
        --duration | --interval | --limit | --stagger | --max-concurrent | \
            --min-children | --grace | --jitter | --idle-timeout | \
            --replace-timeout | --truth-every | --hook-timeout | --metrics-listen)
            # A size, a duration, a number or HOST:PORT: nothing to offer.
            return
            ;;
    esac
    $split && return

    local opts
    case $subcommand in
        check) opts=$check_opts ;;
        diagnose) opts=$diagnose_opts ;;
        reap) opts=$reap_opts ;;
        *)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
            else
                COMPREPLY=($(compgen -W 'check diagnose reap' -- "$cur"))
            fi
            return
            ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
} &&
    complete -F _kidreaper kidreaper

# ex: filetype=sh
