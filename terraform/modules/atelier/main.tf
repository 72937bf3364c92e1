# Atelier on the cluster: the Zero to JupyterHub release with the values that
# `atelier render values` makes, and MLflow's tracking server on RDS and S3.
#
# Rule this module keeps: the chart's values are never written by hand or pasted
# from outputs. values/ turns the other modules' outputs into cluster and deployment
# settings, the external data source runs the atelier CLI on them at every plan, and
# the release gets exactly that text (then var.extra_values: authentication, ingress).
# No password passes through Terraform's state: MLflow reads the database's secret and
# its admin password with its own role when it starts; the hub's copy of the admin
# password is written to its Secret write-only, from an ephemeral read.

locals {
  mlflow_labels = { "app.kubernetes.io/name" = "mlflow", "app.kubernetes.io/part-of" = "atelier" }
  mlflow_url    = "http://mlflow.${var.namespace}.svc.cluster.local:5000"
  service_accounts = {
    (var.mlflow_service_account) = var.mlflow_role_arn
  }
}

resource "kubernetes_namespace_v1" "atelier" {
  metadata {
    name   = var.namespace
    labels = { "app.kubernetes.io/part-of" = "atelier" }
  }
}

# The homes: gp3 volumes from the EBS CSI driver (the cluster module installs it),
# made in the zone the session is scheduled to.
resource "kubernetes_storage_class_v1" "gp3" {
  count = var.storage_class == "gp3" ? 1 : 0

  metadata {
    name = "gp3"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = "Retain"
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

# IRSA: each ServiceAccount names the one role that trusts it (identity module).
resource "kubernetes_service_account_v1" "irsa" {
  for_each = local.service_accounts

  metadata {
    name        = each.key
    namespace   = kubernetes_namespace_v1.atelier.metadata[0].name
    annotations = { "eks.amazonaws.com/role-arn" = each.value }
  }
  automount_service_account_token = false
}

# The hub makes each user's ServiceAccount (their identity in AWS, by EKS Pod
# Identity) and deletes it with the user; the chart's hub Role has no ServiceAccounts.
resource "kubernetes_role_v1" "hub_user_identities" {
  metadata {
    name      = "atelier-hub-user-identities"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
  }
  rule {
    api_groups = [""]
    resources  = ["serviceaccounts"]
    verbs      = ["get", "create", "delete"]
  }
}

resource "kubernetes_role_binding_v1" "hub_user_identities" {
  metadata {
    name      = "atelier-hub-user-identities"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.hub_user_identities.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = "hub"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
  }
}

# The spawn form's live capacity ("3 of 8 GPUs free"): the hub reads the nodes and
# the pods of every namespace (other workloads hold room on the same nodes), and Kueue's
# ClusterQueues (the GPU queue's room, where it is on), read only; with the job logs'
# Role below, the same objects as `atelier render hub-rbac`.
resource "kubernetes_cluster_role_v1" "hub_capacity" {
  metadata {
    name   = "atelier-hub-capacity"
    labels = { "app.kubernetes.io/managed-by" = "atelier", "app.kubernetes.io/component" = "capacity" }
  }
  rule {
    api_groups = [""]
    resources  = ["nodes"]
    verbs      = ["list"]
  }
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["list"]
  }
  rule {
    api_groups = ["kueue.x-k8s.io"]
    resources  = ["clusterqueues"]
    verbs      = ["list"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "hub_capacity" {
  metadata {
    name   = "atelier-hub-capacity"
    labels = { "app.kubernetes.io/managed-by" = "atelier", "app.kubernetes.io/component" = "capacity" }
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.hub_capacity.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = "hub"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
  }
}

# A running job's output (`atelier logs`): the hub reads its pod's log, in its own
# namespace only (the chart's Role has no pods/log); personal Ray clusters: the hub
# makes and removes KubeRay's RayClusters there (they need KubeRay's operator); the GPU
# queue: it reads a waiting server's place from Kueue's visibility API.
resource "kubernetes_role_v1" "hub_job_logs" {
  metadata {
    name      = "atelier-hub-jobs-ray"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = { "app.kubernetes.io/managed-by" = "atelier", "app.kubernetes.io/component" = "jobs" }
  }
  rule {
    api_groups = [""]
    resources  = ["pods/log"]
    verbs      = ["get"]
  }
  rule {
    api_groups = ["ray.io"]
    resources  = ["rayclusters"]
    verbs      = ["get", "list", "watch", "create", "delete"]
  }
  rule {
    api_groups = ["networking.k8s.io"]
    resources  = ["networkpolicies"]
    verbs      = ["create", "delete"]
  }
  rule {
    api_groups = ["visibility.kueue.x-k8s.io"]
    resources  = ["localqueues/pendingworkloads"]
    verbs      = ["get"]
  }
}

resource "kubernetes_role_binding_v1" "hub_job_logs" {
  metadata {
    name      = "atelier-hub-jobs-ray"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = { "app.kubernetes.io/managed-by" = "atelier", "app.kubernetes.io/component" = "jobs" }
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.hub_job_logs.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = "hub"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
  }
}

################################################################################
# The hub: Zero to JupyterHub with rendered values
################################################################################

module "values" {
  source = "./values"

  atelier_command      = var.atelier_command
  profiles_dir         = var.profiles_dir
  values_schema        = var.values_schema
  public_url           = var.public_url
  namespace            = var.namespace
  hub_image            = var.hub_image
  singleuser_image     = var.singleuser_image
  cluster_name         = var.cluster_name
  session_role_arn     = var.session_role_arn
  shared_bucket        = var.shared_bucket
  region               = var.region
  mlflow_server_url    = local.mlflow_url
  mlflow_admin_secret  = kubernetes_secret_v1.mlflow_admin.metadata[0].name
  core_node_selector   = var.core_node_selector
  private_cidrs        = var.private_cidrs
  storage_class        = var.storage_class
  home_capacity        = var.home_capacity
  gpu_servers_per_user = var.gpu_servers_per_user
  extra_services       = var.extra_services

  extra_cluster_settings = var.extra_cluster_settings
}

# Runs `atelier render values` on every plan, so a changed profile or output shows
# up as a diff of the release's values.
data "external" "values" {
  program = module.values.program
  query   = module.values.query
}

resource "helm_release" "this" {
  name       = "atelier"
  repository = "https://hub.jupyter.org/helm-chart/"
  chart      = "jupyterhub"
  version    = var.chart_version
  namespace  = kubernetes_namespace_v1.atelier.metadata[0].name

  values = concat([data.external.values.result.values], var.extra_values)

  # The hub waits for its database and the proxy's load balancer.
  timeout = 900

  depends_on = [
    kubernetes_service_account_v1.irsa,
    kubernetes_storage_class_v1.gp3,
    kubernetes_role_binding_v1.hub_user_identities,
    kubernetes_cluster_role_binding_v1.hub_capacity,
    kubernetes_role_binding_v1.hub_job_logs,
    kubernetes_secret_v1.mlflow_admin,
  ]
}

# MLflow's admin password for the hub's MLflow front, in a Secret the chart mounts in
# the hub pod alone (cluster settings' mlflow.admin_secret). Read from Secrets Manager
# as an ephemeral value and written write-only: not in Terraform's state or plan.
ephemeral "aws_secretsmanager_secret_version" "mlflow_admin" {
  secret_id = var.mlflow_admin_secret_arn
}

resource "kubernetes_secret_v1" "mlflow_admin" {
  metadata {
    name      = "atelier-mlflow-admin"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "atelier" }
  }
  type             = "Opaque"
  data_wo          = { "admin-password" = ephemeral.aws_secretsmanager_secret_version.mlflow_admin.secret_string }
  data_wo_revision = var.mlflow_admin_password_version
}

# GPU nodes advertise nvidia.com/gpu only with the device plugin running on them.
resource "helm_release" "nvidia_device_plugin" {
  count = var.gpu_node_selector == null ? 0 : 1

  name       = "nvidia-device-plugin"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.nvidia_device_plugin_version
  namespace  = "kube-system"

  values = [yamlencode({
    nodeSelector = var.gpu_node_selector
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
}

################################################################################
# MLflow's tracking server: runs in PostgreSQL (RDS), artifacts in S3
################################################################################

resource "kubernetes_config_map_v1" "mlflow" {
  metadata {
    name      = "mlflow-start"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = local.mlflow_labels
  }
  data = {
    "start.py" = file("${path.module}/mlflow_start.py")
  }
}

resource "kubernetes_deployment_v1" "mlflow" {
  # checkov:skip=CKV_K8S_43: the image is a variable; pin it by digest there (name@sha256:...) if your registry allows
  # checkov:skip=CKV_K8S_14: the image (and its tag) is a variable checkov cannot read; envs/example builds it from an immutable ECR tag
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = local.mlflow_labels
  }

  spec {
    replicas = var.mlflow_replicas
    selector {
      match_labels = local.mlflow_labels
    }

    template {
      metadata {
        labels = local.mlflow_labels
      }

      spec {
        service_account_name = var.mlflow_service_account
        # The IRSA token is projected by EKS's webhook; the Kubernetes API token is not needed.
        automount_service_account_token = false
        node_selector                   = var.core_node_selector

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "mlflow"
          image             = var.mlflow_image
          image_pull_policy = "Always"
          command           = ["python", "/opt/atelier/start.py"]

          env {
            name  = "ATELIER_DB_SECRET_ARN"
            value = var.db_secret_arn
          }
          env {
            name  = "ATELIER_ADMIN_SECRET_ARN"
            value = var.mlflow_admin_secret_arn
          }
          env {
            name  = "ATELIER_DB_HOST"
            value = var.db_address
          }
          env {
            name  = "ATELIER_DB_PORT"
            value = tostring(var.db_port)
          }
          env {
            name  = "ATELIER_DB_NAME"
            value = var.db_name
          }
          env {
            name  = "AWS_REGION"
            value = var.region
          }
          env {
            name  = "MLFLOW_ARTIFACTS_DESTINATION"
            value = "s3://${var.mlflow_bucket}/artifacts"
          }
          env {
            # MLflow refuses requests whose Host header it does not know.
            name  = "MLFLOW_SERVER_ALLOWED_HOSTS"
            value = "mlflow,mlflow:5000,mlflow.${var.namespace},mlflow.${var.namespace}:5000,mlflow.${var.namespace}.svc.cluster.local,mlflow.${var.namespace}.svc.cluster.local:5000"
          }

          port {
            name           = "http"
            container_port = 5000
          }

          resources {
            requests = { cpu = "500m", memory = "1Gi" }
            limits   = { cpu = "2", memory = "4Gi" }
          }

          # Served under the hub front's prefix (--static-prefix), open without a login.
          liveness_probe {
            http_get {
              path = "/services/mlflow/health"
              port = "http"
            }
            initial_delay_seconds = 30
            period_seconds        = 20
          }
          readiness_probe {
            http_get {
              path = "/services/mlflow/health"
              port = "http"
            }
            period_seconds = 10
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "start"
            mount_path = "/opt/atelier"
            read_only  = true
          }
          volume_mount {
            # MLflow and gunicorn write temporary files; the root filesystem is read-only.
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "start"
          config_map {
            name = kubernetes_config_map_v1.mlflow.metadata[0].name
          }
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }

  depends_on = [kubernetes_service_account_v1.irsa]
}

resource "kubernetes_service_v1" "mlflow" {
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = local.mlflow_labels
  }
  spec {
    selector = local.mlflow_labels
    port {
      name        = "http"
      port        = 5000
      target_port = "http"
    }
  }
}

# Only the hub pod (the MLflow front) reaches MLflow's port; sessions' egress has no
# rule to it either (the rendered values). MLflow's auth app refuses anyone without an
# account's password anyway.
resource "kubernetes_network_policy_v1" "mlflow" {
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.atelier.metadata[0].name
    labels    = local.mlflow_labels
  }
  spec {
    pod_selector {
      match_labels = local.mlflow_labels
    }
    policy_types = ["Ingress"]
    ingress {
      from {
        pod_selector {
          # The chart's hub pod.
          match_labels = { app = "jupyterhub", component = "hub" }
        }
      }
      ports {
        port     = "5000"
        protocol = "TCP"
      }
    }
  }
}
