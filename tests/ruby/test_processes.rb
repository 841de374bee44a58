require_relative "helper"
require "tmpdir"
require "rbconfig"

# The CLI, the rake task and the runner in child processes: real messages, TERM stops with
# nothing lost, `workers: 2` runs two processes, a dead process is replaced, and an app written
# as in Sneakers' README runs unchanged.
class ProcessesTest < CleatsTestCase
  APPS = File.join(__dir__, "apps")

  def setup
    super
    @dir = Dir.mktmpdir("cleats-rb-proc")
    @pids = []
  end

  def teardown
    @pids.each do |pid|
      Process.kill("KILL", -pid) rescue nil
      Process.wait(pid) rescue nil
    end
    FileUtils.rm_rf(@dir)
    super
  end

  # The sneakers executable: the installed gem's, else the one in the source tree.
  def sneakers_bin
    spec = Gem.loaded_specs["cleats"]
    spec ? Gem.bin_path("cleats", "sneakers") : File.join(CleatsTest::ROOT, "bindings-ruby", "bin", "sneakers")
  end

  def rake_bin
    Gem.bin_path("rake", "rake")
  rescue Gem::Exception
    "rake"
  end

  def app_env(q)
    { "AMQP_URL" => CleatsTest::AMQP, "Q" => q, "OUT" => File.join(@dir, "out"),
      "LOG" => File.join(@dir, "log"), "PID_PATH" => File.join(@dir, "pid") }
  end

  def spawn_app(env, *cmd, chdir:)
    pid = Process.spawn(env, *cmd, chdir: chdir, pgroup: true, out: File.join(@dir, "stdout"), err: File.join(@dir, "stderr"))
    @pids << pid
    pid
  end

  def lines
    File.exist?(File.join(@dir, "out")) ? File.readlines(File.join(@dir, "out"), chomp: true) : []
  end

  def wait_exit(pid, seconds = 30)
    Timeout.timeout(seconds) { Process.wait(pid) }
    @pids.delete(pid)
    $?
  rescue Timeout::Error
    flunk "process #{pid} did not exit in #{seconds}s; stderr: #{File.read(File.join(@dir, 'stderr')) rescue ''}\nlog: #{File.read(File.join(@dir, 'log')) rescue ''}"
  end

  def consumers(q)
    out, = Open3.capture2("rabbitmqctl", "-q", "list_queues", "name", "consumers")
    out.lines.map(&:split).find { |name, _| name == q }&.last.to_i
  end

  def publish_numbers(q, range)
    publisher = Sneakers::Publisher.new
    range.each { |i| publisher.publish(i.to_s, to_queue: q) }
    publisher.close
  end

  # TERM mid-stream: every message is either processed once or still on the queue.
  def assert_term_loses_nothing(pid, q, total, redelivery_allowed: false)
    wait_until(30, "some messages processed") { lines.size >= 10 }
    Process.kill("TERM", pid)
    wait_exit(pid)
    processed = lines.map { |l| l.split.last }
    if redelivery_allowed
      processed.uniq!
    else
      assert_equal processed.uniq.size, processed.size, "a message was processed twice"
    end
    ready, unacked = CleatsTest.queue_counts(q)[q]
    assert_equal 0, unacked
    assert_equal total, processed.size + ready, "processed #{processed.size} + ready #{ready} != #{total}"
    assert_operator processed.size, :<, total, "TERM came after everything was processed; the test proves nothing"
  end

  def test_cli_consumes_and_stops_on_term_without_loss
    q = queue("cli")
    CleatsTest.delete_queue(q)
    pid = spawn_app(app_env(q), RbConfig.ruby, sneakers_bin, "work", "CountingWorker", "--require", "boot.rb",
                    "--pid-path", File.join(@dir, "pid"), chdir: File.join(APPS, "counting"))
    wait_until(30, "the worker to consume") { consumers(q) == 1 }
    publish_numbers(q, 1..200)
    assert_term_loses_nothing(pid, q, 200)
  end

  def test_cli_with_short_require_flag_and_missing_workers
    out, status = Open3.capture2e(app_env("unused"), RbConfig.ruby, sneakers_bin, "work", "CountingWorker,NopeWorker",
                                  "-r", "boot.rb", chdir: File.join(APPS, "counting"))
    assert_includes out, "Missing workers: NopeWorker"
    refute status.success?
  end

  def test_rake_run_with_two_processes_restarts_a_dead_one
    q = queue("rake")
    CleatsTest.delete_queue(q)
    env = app_env(q).merge("WORKERS" => "CountingWorker", "WORKER_COUNT" => "2")
    pid = spawn_app(env, RbConfig.ruby, rake_bin, "sneakers:run", chdir: File.join(APPS, "counting"))
    wait_until(30, "two consumers") { consumers(q) == 2 }
    publish_numbers(q, 1..100)
    wait_until(30, "both processes working") { lines.map { |l| l.split.first }.uniq.size == 2 }
    workers = lines.map { |l| l.split.first.to_i }.uniq
    refute_includes workers, pid
    assert_equal 2, Dir[File.join(@dir, "out.forked.*")].size, "after_fork ran in each child"
    assert_equal "xx", File.read(File.join(@dir, "out.before_fork")), "before_fork ran in the master, per fork"

    Process.kill("KILL", workers.first)
    wait_until(30, "a replacement process") { Dir[File.join(@dir, "out.forked.*")].size == 3 && consumers(q) == 2 }
    before = lines.size
    publish_numbers(q, 101..600)
    wait_until(30, "more work") { lines.size > before + 10 }
    # The killed process may have finished work whose ack never left: the broker redelivers it.
    assert_term_loses_nothing(pid, q, 600, redelivery_allowed: true)
  end

  def test_rake_missing_workers_exit_1
    env = app_env("unused").merge("WORKERS" => "NopeWorker")
    out, status = Open3.capture2e(env, RbConfig.ruby, rake_bin, "sneakers:run", chdir: File.join(APPS, "counting"))
    assert_includes out, "Missing workers: NopeWorker"
    assert_equal 1, status.exitstatus
  end

  def test_sneakers_readme_app_runs_unchanged
    vhost = CleatsTest.unique("vhost")
    system("rabbitmqctl", "-q", "add_vhost", vhost, out: File::NULL) or flunk "add_vhost failed"
    system("rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*", out: File::NULL)
    base = CleatsTest::AMQP.sub(%r{/[^/]*\z}, "")
    env = app_env("logs").merge("AMQP_URL" => base, "VHOST" => vhost)
    pid = spawn_app(env, RbConfig.ruby, sneakers_bin, "work", "Processor", "--require", "boot.rb",
                    chdir: File.join(APPS, "readme"))
    wait_until(30, "the Processor to consume") do
      out, = Open3.capture2("rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers")
      out.include?("logs\t1")
    end
    publisher = Sneakers::Publisher.new(amqp: base, vhost: vhost, exchange: "sneakers")
    publisher.publish({ type: "error", error: "oops" }.to_json, routing_key: "logs")
    publisher.publish({ type: "info", message: "fine" }.to_json, routing_key: "logs")
    publisher.publish({ type: "error", error: "oops" }.to_json, routing_key: "logs")
    publisher.close
    wait_until(20, "the README worker to count") { lines.size == 2 }
    assert_equal ["processor:oops", "processor:oops"], lines
    Process.kill("TERM", pid)
    assert wait_exit(pid).success?
  ensure
    system("rabbitmqctl", "-q", "delete_vhost", vhost, out: File::NULL, err: File::NULL) if vhost
  end

  def forks
    Dir[File.join(@dir, "out.forked.*")].size
  end

  def test_signals_reload_restart_and_quit
    q = queue("signals")
    CleatsTest.delete_queue(q)
    config = File.join(@dir, "runner.rb")
    File.write(config, "workers 1\n")
    env = app_env(q).merge("RUNNER_CONFIG" => config)
    pid = spawn_app(env, RbConfig.ruby, sneakers_bin, "work", "CountingWorker", "-r", "boot.rb",
                    chdir: File.join(APPS, "counting"))
    wait_until(30, "one consumer") { consumers(q) == 1 && forks == 1 }

    File.write(config, "workers 2\nstart_worker_delay 0\n")
    Process.kill("USR2", pid) # reload runner_config_file
    wait_until(30, "two consumers after USR2") { consumers(q) == 2 && forks == 2 }

    Process.kill("USR1", pid) # graceful restart: new processes
    wait_until(30, "restarted processes after USR1") { forks == 4 && consumers(q) == 2 }

    Process.kill("HUP", pid) # immediate restart
    wait_until(30, "restarted processes after HUP") { forks == 6 && consumers(q) == 2 }

    publish_numbers(q, 1..20)
    wait_until(30, "work after the restarts") { lines.size == 20 }
    Process.kill("QUIT", pid) # immediate stop
    wait_exit(pid)
    wait_until(10, "no consumers left") { consumers(q).zero? }
  end

  def test_daemonize_writes_the_pid_file_and_stops_on_term
    q = queue("daemon")
    CleatsTest.delete_queue(q)
    pid_path = File.join(@dir, "daemon.pid")
    # No worker names: every class that included Sneakers::Worker runs.
    out, status = Open3.capture2e(app_env(q).merge("PID_PATH" => pid_path), RbConfig.ruby, sneakers_bin, "work",
                                  "--require", "boot.rb", "--daemonize", "--pid-path", pid_path,
                                  "--log", File.join(@dir, "daemon.log"), chdir: File.join(APPS, "counting"))
    assert status.success?, out
    daemon = wait_until(20, "the pid file") { File.exist?(pid_path) && File.read(pid_path).to_i.nonzero? }
    wait_until(30, "the daemon to consume") { consumers(q) == 1 }
    publish_numbers(q, 1..5)
    wait_until(20, "work") { lines.size == 5 }
    Process.kill("TERM", daemon)
    wait_until(30, "the daemon to exit") { !(Process.kill(0, daemon) rescue false) }
  end

  def test_spawner_starts_each_group_and_forwards_term
    q = queue("spawner")
    CleatsTest.delete_queue(q)
    groups = File.join(@dir, "groups.yml")
    File.write(groups, "counting:\n  classes: [CountingWorker]\n  workers: <%= 1 + 1 %>\n")
    env = app_env(q).merge("WORKER_GROUP_CONFIG" => groups, "SNEAKERS_RAKE_COMMAND" => "#{RbConfig.ruby} #{rake_bin} sneakers:run")
    pid = spawn_app(env, RbConfig.ruby, "-rsneakers/spawner", "-e", "Sneakers::Spawner.spawn",
                    chdir: File.join(APPS, "counting"))
    wait_until(30, "two consumers from the group") { consumers(q) == 2 }
    publish_numbers(q, 1..400)
    assert_term_loses_nothing(pid, q, 400)
  end
end
